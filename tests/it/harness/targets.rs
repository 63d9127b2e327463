//! In-process HTTP, TCP and TLS targets that behave well or badly on purpose.
