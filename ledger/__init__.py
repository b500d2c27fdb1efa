"""runapi-ledger."""
