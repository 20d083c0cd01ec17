"""What the tests share: servers and fakes to run against, and small helpers."""
