//! The three applications, composed from the same parts (engine, plugins, monitor, store)
//! without changing them: GrimOps (chaos campaigns), NecroOps (healing), BackupOps
//! (backups, restores, drills).

pub mod backupops;
pub mod grimops;
pub mod necroops;
