"""PostgreSQL: the store seam, named SQL in ``queries/``, migrations, LISTEN/NOTIFY and the
embedded server. The only package that imports the database driver."""
