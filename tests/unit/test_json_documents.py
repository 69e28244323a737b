"""check_document: what jsonb cannot store is refused with where it is."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.core.json_documents import DocumentProblem, check_document

storable = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(
                alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@given(storable)
def test_storable_documents_pass(document: object) -> None:
    check_document({"doc": document})


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"a": [1, {"b": math.nan}]}, "payload.a[1].b"),
        ({"a": math.inf}, "payload.a"),
        ({"t": "x\x00y"}, "payload.t"),
        ({"k\x00": 1}, "payload"),
        ({"s": ["ok", "\ud800"]}, "payload.s[1]"),
    ],
)
def test_unstorable_documents_name_the_place(document: object, path: str) -> None:
    with pytest.raises(DocumentProblem) as problem:
        check_document(document)
    assert problem.value.path == path


def test_deep_nesting_is_refused() -> None:
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(DocumentProblem, match="nested deeper"):
        check_document({"d": deep})
