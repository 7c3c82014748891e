//! Containment: served.
