//! The seccomp filter every sandbox runs under.
//!
//! Namespaces, the sandbox uid and the absence of capabilities already keep code in a sandbox
//! away from the host; this filter takes away the system calls that reach *across processes of
//! the same uid* (`ptrace`, `pidfd_getfd`, `process_vm_*`: the guest agent runs as the uid its
//! commands run as) and the large kernel surfaces a build or a test never needs (mounts,
//! namespaces, BPF, keyrings, module loading, …). They fail with `EPERM`, like a missing
//! capability, so programs take their usual fallbacks instead of dying.
//!
//! `clone3` fails with `ENOSYS` instead: its flags sit in memory a filter cannot read, and on
//! `ENOSYS` glibc falls back to `clone`, whose flags the filter checks (no `CLONE_NEW*`). One
//! seccompiler filter has one action for every match, so there are two programs; bubblewrap
//! installs both (`--add-seccomp-fd`) right before it execs the guest.
//!
//! The programs are compiled once per provider ([`Programs::compile`]) for the architecture
//! kiln was built for; other architectures are refused with a clear error. Classic BPF sees the
//! raw syscall number, so a kernel that also accepts the x32 ABI (numbers with bit 30 set) would
//! offer a second door to every call here: such a kernel is refused too.

use crate::{Error, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// System calls that fail with `EPERM` inside every sandbox.
#[cfg(target_arch = "x86_64")]
const DENIED: &[i64] = &[
    // Reaching into another process of the same uid (the guest agent's descriptors, memory).
    libc::SYS_ptrace,
    libc::SYS_pidfd_getfd,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_process_madvise,
    libc::SYS_kcmp,
    // Mounts and namespaces: bubblewrap has built the sandbox's view; nothing inside changes it.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fsconfig,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    // Large kernel surfaces no build or test needs.
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_fanotify_init,
    // The machine's business, not a sandbox's.
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_lookup_dcookie,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_uselib,
    libc::SYS_ustat,
    libc::SYS_sysfs,
];
/// Elsewhere [`target_arch`] refuses before the list is needed.
#[cfg(not(target_arch = "x86_64"))]
const DENIED: &[i64] = &[];

/// Every `CLONE_NEW*` flag `clone` takes (`CLONE_NEWTIME` exists only for `clone3`/`unshare`).
const CLONE_NEW_FLAGS: [i32; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// The two compiled programs, as the bytes bubblewrap reads (`struct sock_filter[]`).
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    /// `EPERM` for [`DENIED`] and for `clone` with a `CLONE_NEW*` flag.
    pub(crate) deny: Vec<u8>,
    /// `ENOSYS` for `clone3`.
    pub(crate) no_clone3: Vec<u8>,
}

impl Programs {
    pub(crate) fn compile() -> Result<Programs> {
        let arch = target_arch()?;
        refuse_x32()?;
        let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
        let clone_rules = CLONE_NEW_FLAGS
            .iter()
            .map(|&flag| {
                let flag = flag as u32 as u64;
                let has_flag = SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )?;
                SeccompRule::new(vec![has_flag])
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(compile_error)?;
        denied.insert(libc::SYS_clone, clone_rules);
        let deny = program(denied, libc::EPERM, arch)?;
        let no_clone3 = program(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            libc::ENOSYS,
            arch,
        )?;
        Ok(Programs { deny, no_clone3 })
    }
}

/// Compiles rules whose matches fail with `errno`; everything else is allowed.
fn program(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
    arch: TargetArch,
) -> Result<Vec<u8>> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(compile_error)?;
    let program: BpfProgram = filter.try_into().map_err(compile_error)?;
    Ok(program
        .iter()
        .flat_map(|insn| {
            let mut bytes = [0u8; 8];
            bytes[..2].copy_from_slice(&insn.code.to_ne_bytes());
            bytes[2] = insn.jt;
            bytes[3] = insn.jf;
            bytes[4..].copy_from_slice(&insn.k.to_ne_bytes());
            bytes
        })
        .collect())
}

fn compile_error(err: impl std::fmt::Display) -> Error {
    Error::Start(format!(
        "could not compile the sandbox seccomp filter: {err}"
    ))
}

#[cfg(target_arch = "x86_64")]
fn target_arch() -> Result<TargetArch> {
    Ok(TargetArch::x86_64)
}

#[cfg(not(target_arch = "x86_64"))]
fn target_arch() -> Result<TargetArch> {
    Err(Error::Unsupported(format!(
        "the local sandbox provider's seccomp filter is written for x86_64 only, not {}",
        std::env::consts::ARCH
    )))
}

/// On x86_64, a syscall number with bit 30 set is the x32 ABI's; a kernel without x32 answers
/// `ENOSYS` before any filter could be asked.
#[cfg(target_arch = "x86_64")]
fn refuse_x32() -> Result<()> {
    const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
    // SAFETY: getpid takes no arguments and has no side effects, in either ABI.
    let rc = unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) };
    if rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        Ok(())
    } else {
        Err(Error::Unsupported(
            "this kernel accepts x32 system calls, which the sandbox seccomp filter does not \
             cover; boot it with `syscall.x32=n` to run sandboxes"
                .into(),
        ))
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn refuse_x32() -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Programs;

    #[test]
    fn programs_compile_to_whole_instructions() {
        let programs = Programs::compile().expect("compiles");
        for bytes in [&programs.deny, &programs.no_clone3] {
            assert!(!bytes.is_empty());
            assert_eq!(bytes.len() % 8, 0);
            // The kernel's limit on one program.
            assert!(bytes.len() / 8 <= 4096);
        }
    }
}
