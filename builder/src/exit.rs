//! The one exit-code table of the `kiln` command, for every command alike: each error type says
//! which of the two failures it is, here and nowhere else, so `export` and `flash` (or `check`
//! and `export`) cannot drift apart again. The README's "Exit codes" is this table in prose.

use crate::diff::DiffError;
use crate::export::ExportError;
use crate::flash::FlashError;
use crate::image::ImageError;
use crate::pipeline::build::BuildError;
use crate::pipeline::overlay::OverlayError;
use crate::recipe::RecipeError;
use crate::registry::{RegistryError, TransferError};
use crate::signing::keys::KeyError;
use crate::signing::release::ReleaseError;
use crate::signing::sign::SignError;
use crate::signing::tuf::TufError;

/// How a failed command ends (0 is success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: what was given or checked is wrong (a recipe or board file, the lock, a package, an
    /// image, a signature, a device): fixing the input fixes it.
    Refused = 1,
    /// 2: kiln could not do its work (network, disk, a tool, emulation, a key or image it cannot
    /// read): retrying elsewhere or fixing the machine fixes it.
    CouldNotRun = 2,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error that knows which failure it is.
pub trait Classified {
    /// Its exit code.
    fn exit(&self) -> Exit;
}

impl Classified for RecipeError {
    fn exit(&self) -> Exit {
        Exit::Refused
    }
}

impl Classified for BuildError {
    fn exit(&self) -> Exit {
        use crate::pipeline::compose::ComposeError;
        use crate::pipeline::configure::ConfigureError;
        match self {
            BuildError::Spec(_) | BuildError::Offline(_) | BuildError::Check { .. } => {
                Exit::Refused
            }
            BuildError::Lock(e) => e.exit(),
            BuildError::Fetch(e) => e.exit(),
            BuildError::Inputs(e) => e.exit(),
            BuildError::Compose(ComposeError::Io { .. }) => Exit::CouldNotRun,
            BuildError::Compose(_) => Exit::Refused,
            BuildError::Configure(ConfigureError::Script { .. }) => Exit::Refused,
            BuildError::Configure(_) => Exit::CouldNotRun,
            BuildError::Overlay(e) => e.exit(),
            BuildError::Pack(_)
            | BuildError::Oci(_)
            | BuildError::Output { .. }
            | BuildError::LayerCache(_)
            | BuildError::Registry(_) => Exit::CouldNotRun,
        }
    }
}

impl Classified for crate::pipeline::lock::LockError {
    fn exit(&self) -> Exit {
        use crate::pipeline::lock::LockError;
        match self {
            LockError::Archive(crate::debian::archive::ArchiveError::Transport(_))
            | LockError::Write { .. } => Exit::CouldNotRun,
            _ => Exit::Refused,
        }
    }
}

impl Classified for crate::pipeline::fetch::FetchError {
    fn exit(&self) -> Exit {
        use crate::pipeline::fetch::FetchError;
        match self {
            FetchError::Mismatch { .. } | FetchError::NotCached { .. } => Exit::Refused,
            _ => Exit::CouldNotRun,
        }
    }
}

impl Classified for RegistryError {
    fn exit(&self) -> Exit {
        // A registry holding other bytes than the manifest names is refused; one that is down
        // or denies access is a run that could not happen.
        match self {
            RegistryError::Corrupt { .. } => Exit::Refused,
            _ => Exit::CouldNotRun,
        }
    }
}

impl Classified for crate::pipeline::inputs::InputsError {
    fn exit(&self) -> Exit {
        use crate::pipeline::inputs::InputsError;
        match self {
            InputsError::Recipe(_) | InputsError::Refused { .. } => Exit::Refused,
            InputsError::Lock(e) => e.exit(),
            InputsError::Cache(e) => e.exit(),
            InputsError::Registry(e) => e.exit(),
        }
    }
}

impl Classified for crate::pipeline::sources::SourcesError {
    fn exit(&self) -> Exit {
        use crate::pipeline::sources::SourcesError;
        match self {
            SourcesError::Recipe(_) | SourcesError::Refused { .. } | SourcesError::Layout(_) => {
                Exit::Refused
            }
            SourcesError::Lock(e) => e.exit(),
            SourcesError::Fetch(e) => e.exit(),
            SourcesError::Archive(crate::debian::archive::ArchiveError::Transport(_)) => {
                Exit::CouldNotRun
            }
            SourcesError::Archive(_) => Exit::Refused,
        }
    }
}

impl Classified for OverlayError {
    fn exit(&self) -> Exit {
        match self {
            OverlayError::Envrun { .. } | OverlayError::Sandbox(_) | OverlayError::Io { .. } => {
                Exit::CouldNotRun
            }
            _ => Exit::Refused,
        }
    }
}

impl Classified for ExportError {
    fn exit(&self) -> Exit {
        match self {
            ExportError::Tool { .. } | ExportError::Io { .. } => Exit::CouldNotRun,
            _ => Exit::Refused,
        }
    }
}

impl Classified for FlashError {
    fn exit(&self) -> Exit {
        match self {
            FlashError::Refused { .. } => Exit::Refused,
            _ => Exit::CouldNotRun,
        }
    }
}

impl Classified for SignError {
    fn exit(&self) -> Exit {
        match self {
            SignError::Command { .. } => Exit::CouldNotRun,
            _ => Exit::Refused,
        }
    }
}

impl Classified for ReleaseError {
    fn exit(&self) -> Exit {
        match self {
            ReleaseError::Io { .. } => Exit::CouldNotRun,
            _ => Exit::Refused,
        }
    }
}

impl Classified for DiffError {
    /// A side that is no readable layout: the input is wrong.
    fn exit(&self) -> Exit {
        Exit::Refused
    }
}

impl Classified for TufError {
    /// Metadata that does not verify, a key that is not the role's, a threshold not met: the
    /// input is wrong.
    fn exit(&self) -> Exit {
        Exit::Refused
    }
}

impl Classified for KeyError {
    fn exit(&self) -> Exit {
        Exit::CouldNotRun
    }
}

impl Classified for ImageError {
    fn exit(&self) -> Exit {
        Exit::CouldNotRun
    }
}

impl Classified for TransferError {
    fn exit(&self) -> Exit {
        match self {
            // A registry holding other bytes than the manifest names, or a layout that does
            // not hold together, is refused; a registry that is down or denies access, or a
            // malformed reference, is a run that could not happen.
            TransferError::Layout { .. } | TransferError::Board { .. } => Exit::Refused,
            TransferError::Registry(e) => e.exit(),
            TransferError::Reference(_) => Exit::CouldNotRun,
        }
    }
}
