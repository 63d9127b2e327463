//! Status badges (`/badge/{name}.svg`): status, uptime or latency of one
//! probe as a small SVG for READMEs.
