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
