"""Stockyard load benchmark: GraphQL orderCreate under concurrency vs. a raw SQL baseline."""
