//! TLS plumbing shared by the `http` and `tls` kinds: building rustls client
//! configurations (system roots, a custom CA, or no verification), and
//! reading the leaf certificate's subject and expiry.
