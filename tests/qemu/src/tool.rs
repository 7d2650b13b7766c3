//! Running the external tools the harness relies on (QEMU for arm64 and
//! x86-64, qemu-img, mtools, debugfs, e2fsck, ip, chronyd, curl), with a clear
//! failure when one is not installed.

use crate::{HarnessError, Result};
use std::process::{Command, Output, Stdio};

/// A tool and the Debian package that brings it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

pub const QEMU: Tool = Tool {
    name: "qemu-system-aarch64",
    package: "qemu-system-arm",
};
/// The pc-efi masters (from bookworm-backports, like qemu-system-arm:
/// `apt-get install qemu-system-x86/bookworm-backports`).
pub const QEMU_X86: Tool = Tool {
    name: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
pub const QEMU_IMG: Tool = Tool {
    name: "qemu-img",
    package: "qemu-utils",
};
pub const QEMU_IO: Tool = Tool {
    name: "qemu-io",
    package: "qemu-utils",
};
pub const MCOPY: Tool = Tool {
    name: "mcopy",
    package: "mtools",
};
pub const MFORMAT: Tool = Tool {
    name: "mformat",
    package: "mtools",
};
pub const MMD: Tool = Tool {
    name: "mmd",
    package: "mtools",
};
pub const DPKG_DEB: Tool = Tool {
    name: "dpkg-deb",
    package: "dpkg",
};
pub const MDIR: Tool = Tool {
    name: "mdir",
    package: "mtools",
};
pub const DEBUGFS: Tool = Tool {
    name: "debugfs",
    package: "e2fsprogs",
};
pub const E2FSCK: Tool = Tool {
    name: "e2fsck",
    package: "e2fsprogs",
};
pub const IP: Tool = Tool {
    name: "ip",
    package: "iproute2",
};
pub const CURL: Tool = Tool {
    name: "curl",
    package: "curl",
};
pub const CHRONYD: Tool = Tool {
    name: "chronyd",
    package: "chrony",
};

impl Tool {
    /// Fails with the package to install when the tool is not on PATH.
    pub fn require(self) -> Result<()> {
        let found = std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(self.name).is_file())
        }) || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(self.name).is_file());
        if found {
            Ok(())
        } else {
            Err(HarnessError::ToolMissing {
                tool: self.name,
                package: self.package,
            })
        }
    }

    pub fn command(self) -> Result<Command> {
        self.require()?;
        let mut cmd = Command::new(self.name);
        cmd.stdin(Stdio::null());
        Ok(cmd)
    }
}

/// A command line as text, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// Runs `cmd` to completion; a non-zero exit is an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let command = describe(cmd);
    let out = cmd.output().map_err(|source| HarnessError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(HarnessError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
