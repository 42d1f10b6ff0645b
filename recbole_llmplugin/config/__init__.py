"""Configuration: the checks on properties and the command line, the option tables, run identities and paths."""
