//! The JSON API under `/api/v1`: probes, their results and statistics over
//! a window, incidents, and the OpenAPI document describing them.
