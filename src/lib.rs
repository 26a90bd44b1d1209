#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod error;
mod key;
mod secret;
mod signing;

pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use key::{KeyBackend, KeySize, PublicKey, SigningKey, sha256};
pub use secret::SecretString;
pub use signing::*;
