//! Containment: build.
