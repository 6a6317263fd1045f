//! ire's replicated lease locks, fault ledger, campaigns and audit log on openraft + sled.
