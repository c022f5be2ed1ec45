"""Local fakes of external APIs that tests point real clients at."""
