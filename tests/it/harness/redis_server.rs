//! A throwaway server for tests (being written).
