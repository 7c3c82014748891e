//! The target directory: its layout (slots, link, state directory), what happens to slots,
//! the switch of the link, and the state pushdeploy keeps there (lock, history, records,
//! indexes).

pub mod durable;
pub mod history;
pub mod index;
pub mod kept;
pub mod layout;
pub mod link;
pub mod lock;
pub mod logs;
pub mod path_map;
pub mod record;
pub mod slots;

pub use layout::{Error, Layout, Live, Slot};
