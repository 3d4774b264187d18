"""What `doit show` and `doit status` print: tables built from the cluster and its real state."""
