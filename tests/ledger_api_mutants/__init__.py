"""The ledger API and the admin API held to the letter in this process, through the
gateway's real routes and runtime, with row-level security out of the way (tests
written while reviewing the surviving mutants of `make mutate`)."""
