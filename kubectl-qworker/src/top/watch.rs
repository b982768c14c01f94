//! `top --watch`: a look every `--interval` until Ctrl-C.
//!
//! On a terminal each look is drawn over the last, as `watch` does: in the alternate screen, from
//! the top-left corner, every line cleared before it is written and the screen cleared below the
//! last one, cut to the screen's size so that it never scrolls; Ctrl-C (or SIGTERM) gives the
//! terminal back as it was. Anywhere else (a pipe, a file) each look follows the last with a blank
//! line between, as `kubectl get -w` streams, and errors or "No resources found" go to stderr.

use std::io::{ErrorKind, Write};
use std::process::ExitCode;
use std::time::Duration;

use crossterm::cursor::{Hide, MoveTo, Show};
use crossterm::terminal::{Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen};
use jiff::Timestamp;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::MissedTickBehavior;

use super::{look, no_resources, scope};
use crate::cli::TopArgs;
use crate::client::Ctx;
use crate::duration::format_duration;
use crate::error::{Error, Result};

/// Where the looks go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    /// A terminal: redraw in place.
    Terminal,
    /// A pipe or a file: one look after another.
    Stream,
}

/// The ANSI text of a terminal command.
fn ansi(command: impl crossterm::Command) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = command.write_ansi(&mut text);
    text
}

/// What sets the terminal up for redrawing (alternate screen, no cursor), and what gives it back.
pub fn enter() -> String {
    ansi(EnterAlternateScreen) + &ansi(Hide)
}

pub fn leave() -> String {
    ansi(Show) + &ansi(LeaveAlternateScreen)
}

/// One look as written to a terminal of `size` (columns, rows; unknown or zero: no cut): home,
/// then each line cleared and written, then the rest of the screen cleared.
pub fn redraw(text: &str, size: Option<(u16, u16)>) -> String {
    let (columns, rows) = match size {
        Some((c, r)) if c > 0 && r > 0 => (usize::from(c), usize::from(r)),
        _ => (usize::MAX, usize::MAX),
    };
    let clear_line = ansi(Clear(ClearType::CurrentLine));
    let mut out = ansi(MoveTo(0, 0));
    let lines: Vec<&str> = text.lines().take(rows).collect();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(&clear_line);
        out.extend(line.chars().take(columns));
    }
    if lines.len() < rows {
        // Below the last line: what a longer previous look left there.
        if !lines.is_empty() {
            out.push_str("\r\n");
        }
        out.push_str(&ansi(Clear(ClearType::FromCursorDown)));
    }
    out
}

/// The line above the tables on a terminal: how often, what, and when this look was taken.
pub fn title(interval: Duration, namespace: Option<&str>, at: Timestamp) -> String {
    let scope = match namespace {
        Some(ns) => format!("namespace {ns}"),
        None => "all namespaces".to_owned(),
    };
    format!(
        "Every {}: kubectl qworker top, {scope}   {at:.0}   (Ctrl-C to quit)",
        format_duration(interval)
    )
}

pub async fn run(
    ctx: &Ctx,
    args: &TopArgs,
    screen: Screen,
    out: &mut impl Write,
) -> Result<ExitCode> {
    // Caught before the terminal is touched, so that Ctrl-C always finds it to give back.
    let stop = Stop::new()?;
    // The first look's error (no CRD, no such QWorker, forbidden) ends it, as without --watch.
    let first = look(ctx, args).await?;
    if screen == Screen::Terminal {
        out.write_all(enter().as_bytes())?;
    }
    let shown = show(ctx, args, screen, Ok(first), stop, out).await;
    if screen == Screen::Terminal {
        let _ = out.write_all(leave().as_bytes());
        let _ = out.flush();
    }
    match shown {
        // The reader went away (`| head`): as done as Ctrl-C.
        Err(Error::Io(e)) if e.kind() == ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => other.map(|()| ExitCode::SUCCESS),
    }
}

/// Shows each look, then waits for the next tick, until stopped.
async fn show(
    ctx: &Ctx,
    args: &TopArgs,
    screen: Screen,
    mut seen: Result<Option<String>>,
    mut stop: Stop,
    out: &mut impl Write,
) -> Result<()> {
    let namespace = scope(ctx, args);
    let mut ticks = tokio::time::interval(args.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut was_empty = false;
    loop {
        match screen {
            Screen::Terminal => {
                let body = match &seen {
                    Ok(Some(text)) => text.clone(),
                    Ok(None) => no_resources(namespace),
                    // A later failure (the API server restarting) is shown, and tried again.
                    Err(e) => format!("error: {e}"),
                };
                let text = format!(
                    "{}\n\n{body}",
                    title(args.interval, namespace, Timestamp::now())
                );
                let size = crossterm::terminal::size().ok();
                out.write_all(redraw(&text, size).as_bytes())?;
            }
            Screen::Stream => match &seen {
                Ok(Some(text)) => {
                    was_empty = false;
                    writeln!(out, "{text}")?;
                }
                Ok(None) if !was_empty => {
                    was_empty = true;
                    eprintln!("{}", no_resources(namespace));
                }
                Ok(None) => {}
                Err(e) => eprintln!("error: {e}"),
            },
        }
        out.flush()?;
        tokio::select! {
            _ = stop.wait() => return Ok(()),
            _ = ticks.tick() => {}
        }
        seen = tokio::select! {
            _ = stop.wait() => return Ok(()),
            seen = look(ctx, args) => seen,
        };
    }
}

/// Ctrl-C or SIGTERM, listened for from the start.
struct Stop {
    interrupt: Signal,
    terminate: Signal,
}

impl Stop {
    fn new() -> Result<Stop> {
        Ok(Stop {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "\x1b[1;1H";
    const CLEAR_LINE: &str = "\x1b[2K";
    const CLEAR_BELOW: &str = "\x1b[J";

    #[test]
    fn a_redraw_goes_home_clears_each_line_and_what_is_below() {
        assert_eq!(
            redraw("NAME   QUEUE\nmail   42\n", Some((80, 24))),
            format!("{HOME}{CLEAR_LINE}NAME   QUEUE\r\n{CLEAR_LINE}mail   42\r\n{CLEAR_BELOW}")
        );
        assert_eq!(redraw("", Some((80, 24))), format!("{HOME}{CLEAR_BELOW}"));
    }

    #[test]
    fn a_redraw_is_cut_to_the_screen_so_that_it_never_scrolls() {
        let text = "0123456789\nabcdefghij\nABCDEFGHIJ\n";
        assert_eq!(
            redraw(text, Some((4, 2))),
            format!("{HOME}{CLEAR_LINE}0123\r\n{CLEAR_LINE}abcd")
        );
        // Multi-byte characters are cut whole.
        assert_eq!(
            redraw("ééé", Some((2, 5))),
            format!("{HOME}{CLEAR_LINE}éé\r\n{CLEAR_BELOW}")
        );
        // An unknown size cuts nothing.
        for size in [None, Some((0, 0))] {
            assert!(redraw(text, size).contains("ABCDEFGHIJ"));
        }
    }

    #[test]
    fn the_terminal_is_given_back_as_it_was_taken() {
        assert_eq!(enter(), "\x1b[?1049h\x1b[?25l");
        assert_eq!(leave(), "\x1b[?25h\x1b[?1049l");
    }

    #[test]
    fn the_title_says_how_often_where_and_when() {
        let at = Timestamp::new(1_767_225_600, 500_000_000).unwrap();
        assert_eq!(
            title(Duration::from_secs(2), Some("team-a"), at),
            "Every 2s: kubectl qworker top, namespace team-a   2026-01-01T00:00:00Z   (Ctrl-C to quit)"
        );
        assert!(title(Duration::from_millis(500), None, at)
            .starts_with("Every 500ms: kubectl qworker top, all namespaces"));
    }
}
