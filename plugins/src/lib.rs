//! ire's chaos, healing and backup plugin catalog.
