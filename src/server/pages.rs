//! The HTML pages: the status page at `/` and a page per probe at
//! `/probes/{name}`, rendered on the server (they work without JavaScript),
//! with their assets embedded in the binary.
