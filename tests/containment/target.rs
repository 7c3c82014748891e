//! Containment: target.
