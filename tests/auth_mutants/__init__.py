"""Key resolution and provider keys held to the letter, in this process, on the real key
store (tests written while reviewing the surviving mutants of `make mutate`)."""
