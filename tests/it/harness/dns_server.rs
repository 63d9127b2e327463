//! A throwaway DNS server with a test zone, started from the installed binary.
