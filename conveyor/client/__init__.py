"""The HTTP client of Conveyor's API, and the models it shares with the server."""
