"""HTTP layer of the recommender: thin routes over the catalog, ranking and search."""
