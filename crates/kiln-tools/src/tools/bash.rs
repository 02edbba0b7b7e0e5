//! `bash`: a shell command in the workdir, streamed, with a timeout, killable at any moment.
//!
//! The command runs under `bash -c` when the image has bash, else `/bin/sh -c`, with stdin from
//! `/dev/null` and pagers disabled, in its own process group (the guest does that), so timeouts
//! and cancellation take its children with it. Output streams to the client as it comes; the model
//! gets stdout and stderr interleaved in arrival order, cut in the middle when long, plus the exit
//! code. File changes are found by comparing git snapshots (see `git.rs`).

use super::args::parse;
use super::exec::{Driven, Ended, Step, argv, request};
use super::output::{HeadTail, OUTPUT_LIMIT, Utf8Stream};
use super::{MAX_BASH_TIMEOUT, ToolContext, ToolError, ToolResult, ToolUpdate, git, send};
use kiln_protocol::api::ToolStream;
use kiln_protocol::guest::{CommandLine, FileKind, OutputStream};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// Bytes streamed to clients per call; past it the live view says so and only the result (head
/// and tail) carries the rest. Keeps `yes` from flooding the event log.
const STREAM_LIMIT: usize = 1 << 20;
/// How long a cancelled call still spends finding the files its command changed.
const CANCELLED_SNAPSHOT_WAIT: Duration = Duration::from_millis(400);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BashArgs {
    command: String,
    timeout_secs: Option<u64>,
}

pub(crate) async fn bash(
    ctx: &ToolContext<'_>,
    input: &Value,
    updates: &mpsc::Sender<ToolUpdate>,
) -> Result<ToolResult, ToolError> {
    let args: BashArgs = parse("bash", input)?;
    if args.command.trim().is_empty() {
        return Err(ToolError::BadArguments {
            tool: "bash",
            message: "`command` is empty".into(),
        });
    }
    let max = MAX_BASH_TIMEOUT.as_secs();
    let timeout = match args.timeout_secs {
        Some(secs) if secs == 0 || secs > max => {
            return Err(ToolError::BadArguments {
                tool: "bash",
                message: format!("`timeout_secs` must be between 1 and {max}, got {secs}"),
            });
        }
        Some(secs) => Duration::from_secs(secs),
        None => ctx.bash_timeout.min(MAX_BASH_TIMEOUT),
    };

    let shell = match ctx.sandbox.guest().stat("/bin/bash").await {
        Ok(stat) if stat.kind == FileKind::File => "/bin/bash",
        _ => "/bin/sh",
    };
    let mut env = ctx.env.clone();
    env.extend(
        [
            ("PAGER", "cat"),
            ("GIT_PAGER", "cat"),
            ("GIT_TERMINAL_PROMPT", "0"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let command: CommandLine = argv(&[shell, "-c", &args.command]);

    let before = git::snapshot(ctx.sandbox, ctx.workdir, None).await;
    let mut combined = HeadTail::new(OUTPUT_LIMIT);
    let mut decoders = [Utf8Stream::default(), Utf8Stream::default()];
    let mut streamed = 0usize;
    let mut exec = Driven::start(ctx, request(command, ctx.workdir, env, timeout)).await?;
    let ended = loop {
        let (stream, data) = match exec.next(ctx.cancel).await? {
            Step::Output(stream, data) => (stream, data),
            Step::Ended(ended) => break ended,
        };
        combined.push(&data);
        if streamed >= STREAM_LIMIT {
            continue;
        }
        streamed += data.len();
        let (i, stream) = match stream {
            OutputStream::Stdout => (0, ToolStream::Stdout),
            OutputStream::Stderr => (1, ToolStream::Stderr),
        };
        let mut chunk = decoders[i].decode(&data);
        if streamed >= STREAM_LIMIT {
            chunk.push_str("\n[live output stops here; the result keeps the head and tail]\n");
        }
        if !chunk.is_empty() {
            send(ctx, updates, ToolUpdate::Output { stream, chunk }).await;
        }
    };
    for (i, stream) in [ToolStream::Stdout, ToolStream::Stderr]
        .into_iter()
        .enumerate()
    {
        let chunk = decoders[i].finish();
        if !chunk.is_empty() && streamed < STREAM_LIMIT {
            send(ctx, updates, ToolUpdate::Output { stream, chunk }).await;
        }
    }

    report_changes(ctx, updates, before, matches!(ended, Ended::Cancelled)).await;

    let output = if combined.is_empty() {
        "(no output)".to_string()
    } else {
        combined.into_string().trim_end_matches('\n').to_string()
    };
    Ok(match ended {
        Ended::Cancelled => {
            super::cancelled(format!("{output}\n\n[cancelled: the command was killed]"))
        }
        Ended::Exited(status) if status.timed_out => ToolResult::error(format!(
            "{output}\n\n[timed out after {} s: the command and its children were killed]",
            timeout.as_secs()
        )),
        Ended::Exited(status) => {
            let how = match (status.code, status.signal) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => "exit status unknown".into(),
            };
            ToolResult::ok(format!("{output}\n\n[{how}]"))
        }
    })
}

/// Compares the work tree with the `before` snapshot and sends a [`ToolUpdate::FileChanged`]
/// per changed path. A cancelled call spends at most [`CANCELLED_SNAPSHOT_WAIT`] on it.
async fn report_changes(
    ctx: &ToolContext<'_>,
    updates: &mpsc::Sender<ToolUpdate>,
    before: Option<git::Snapshot>,
    cancelled: bool,
) {
    let Some(before) = before else { return };
    let after = git::snapshot(ctx.sandbox, ctx.workdir, Some(&before));
    let after = if cancelled {
        tokio::time::timeout(CANCELLED_SNAPSHOT_WAIT, after)
            .await
            .ok()
            .flatten()
    } else {
        after.await
    };
    let Some(after) = after else { return };
    for change in git::changes(&before, &after, ctx.workdir) {
        send(ctx, updates, ToolUpdate::FileChanged(change)).await;
    }
}
