"""The routing table: the file apply writes and the router reads."""
