//! `kiln admin …`: recovery run on the server's machine, through the data dir rather than the
//! API. When the last admin token is lost or revoked, nobody can mint one through the API; whoever
//! can read the data dir (root, the service user) can, with `kiln admin token`.
//!
//! It opens the store directly and does not take `kiln.lock`: SQLite in WAL mode lets it write
//! beside a running `kiln up`, and a token is one row, which the server reads on the next request.

use crate::DataDirArg;
use anyhow::Context;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdminCommand {
    /// Mint a new admin token, print it and write it to DATA/admin.token (mode 0600): for the
    /// first admin, or `--user`, or a new admin user `admin` when there is none.
    Token {
        #[command(flatten)]
        data_dir: DataDirArg,
        /// The admin to mint it for; a new admin user of this name when nobody has it.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// A new (or empty) directory for the copy.
    dir: std::path::PathBuf,
    #[command(flatten)]
    data_dir: DataDirArg,
}

/// `kiln backup DIR`: a consistent copy of the databases, taken beside a running `kiln up`.
pub(crate) async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let (data_dir, dest) = (args.data_dir.data_dir, args.dir);
    let started = std::time::Instant::now();
    let report = {
        let (data_dir, dest) = (data_dir.clone(), dest.clone());
        tokio::task::spawn_blocking(move || kiln_store::backup(&data_dir, &dest)).await?
    }
    .with_context(|| format!("backing up {} into {}", data_dir.display(), dest.display()))?;
    println!(
        "backed up {} session(s) and the control DB into {} ({:.1} MB, {})",
        report.sessions,
        dest.display(),
        report.bytes as f64 / 1e6,
        kiln_core::human_duration(started.elapsed()),
    );
    if report.missing > 0 {
        println!(
            "{} session(s) deleted during the backup are not in it",
            report.missing
        );
    }
    if report.secret_key {
        println!(
            "secret.key is in the copy (it opens the repo secrets): keep the copy as private as \
             the data dir"
        );
    } else {
        println!(
            "no secret.key in the data dir: keep KILN_SECRET_KEY with the copy, or its repo \
             secrets cannot be opened"
        );
    }
    println!(
        "not copied: sandboxes, image layers and snapshots; a kiln started on the copy builds \
         images again and continues each session from a fresh checkout"
    );
    Ok(())
}

pub(crate) async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Token { data_dir, user } => {
            let data_dir = data_dir.data_dir;
            anyhow::ensure!(
                data_dir.join("control.db").is_file(),
                "{} holds no kiln data (no control.db); pass the server's --data-dir",
                data_dir.display()
            );
            let store = kiln_store::Store::open(&data_dir)
                .await
                .with_context(|| format!("opening the store in {}", data_dir.display()))?;
            let (admin, token) =
                kiln_server::recover_admin_token(&store, &data_dir, user.as_deref()).await?;
            eprintln!(
                "new token for admin {:?}, also written to {}",
                admin.name,
                data_dir.join(kiln_server::ADMIN_TOKEN_FILE).display()
            );
            println!("{token}");
            Ok(())
        }
    }
}
