//! Real-time status requests, shared by the links with a read side (`tcp`,
//! and `device` when the device answers): `DLE EOT 1` (printer: online),
//! `DLE EOT 2` (offline cause: cover open, stopped at paper end) and
//! `DLE EOT 4` (roll paper sensor: near end, out), one answer byte each
//! (Epson ESC/POS reference, `DLE EOT`). The request bytes are built by
//! `escpos` and the answers parsed by `escpos`.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use escpos::utils::{RealTimeStatusRequest, RealTimeStatusResponse};
use kiosk_schemas::{PaperStatus, PrinterStatus};

use super::PrinterError;
use crate::render::capture::capture;

/// The answers to one request.
type Answers = HashMap<RealTimeStatusResponse, bool>;

/// Sends `DLE EOT 1`, `2` and `4` on `link`, one at a time, and combines
/// their answers ([`status_from_answers`]). `link`'s reads and writes must
/// be bounded in time by the caller (a socket timeout, a deadline).
///
/// # Errors
/// `io_error(action, error)` for a failed write (`"write to"`) or read
/// (`"read status from"`); [`PrinterError::Status`] naming `target` when
/// the link ends before an answer or an answer is not a status byte.
pub(super) fn query(
    link: &mut (impl Read + Write),
    target: &str,
    io_error: impl Fn(&'static str, io::Error) -> PrinterError,
) -> Result<PrinterStatus, PrinterError> {
    let mut ask = |request| ask(link, request, target, &io_error);
    let printer = ask(RealTimeStatusRequest::Printer)?;
    let offline_cause = ask(RealTimeStatusRequest::OfflineCause)?;
    let paper = ask(RealTimeStatusRequest::RollPaperSensor)?;
    Ok(status_from_answers(&printer, &offline_cause, &paper))
}

/// Sends one `DLE EOT n` request and reads its one-byte answer.
fn ask(
    link: &mut (impl Read + Write),
    request: RealTimeStatusRequest,
    target: &str,
    io_error: &impl Fn(&'static str, io::Error) -> PrinterError,
) -> Result<Answers, PrinterError> {
    let command = capture(None, 48, |p| p.real_time_status(request).map(drop))?;
    link.write_all(&command)
        .and_then(|()| link.flush())
        .map_err(|e| io_error("write to", e))?;
    let mut answer = [0u8; 1];
    match link.read_exact(&mut answer) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(PrinterError::Status {
                target: target.to_owned(),
                reason: format!("link closed before the answer to {request:?}"),
            });
        }
        Err(e) => return Err(io_error("read status from", e)),
    }
    RealTimeStatusResponse::parse(request, answer[0]).map_err(|e| PrinterError::Status {
        target: target.to_owned(),
        reason: format!("{request:?}: {e}"),
    })
}

/// Combines the answers to `DLE EOT 1`, `2` and `4`. Ready means a job sent
/// now would print: online, cover closed, paper not out (near end still
/// prints).
fn status_from_answers(
    printer: &Answers,
    offline_cause: &Answers,
    paper: &Answers,
) -> PrinterStatus {
    let flag = |answers: &Answers, key| answers.get(&key).copied().unwrap_or(false);
    let online = flag(printer, RealTimeStatusResponse::Online);
    let cover_open = !flag(offline_cause, RealTimeStatusResponse::CoverClosed);
    let stopped_at_paper_end = flag(
        offline_cause,
        RealTimeStatusResponse::PrintingStopsDueToPaperEnd,
    );
    let error_occurred = flag(offline_cause, RealTimeStatusResponse::ErrorOccurred);
    let paper = if stopped_at_paper_end
        || !flag(
            paper,
            RealTimeStatusResponse::RollPaperEndSensorPaperPresent,
        ) {
        PaperStatus::Out
    } else if !flag(
        paper,
        RealTimeStatusResponse::RollPaperNearEndSensorPaperAdequate,
    ) {
        PaperStatus::NearEnd
    } else {
        PaperStatus::Ok
    };
    let ready = online && !cover_open && paper != PaperStatus::Out;
    let error = (!ready).then(|| {
        let reasons: Vec<&str> = [
            (!online, "offline"),
            (cover_open, "cover open"),
            (paper == PaperStatus::Out, "paper out"),
            (error_occurred, "printer error"),
        ]
        .into_iter()
        .filter_map(|(set, reason)| set.then_some(reason))
        .collect();
        reasons.join(", ")
    });
    PrinterStatus {
        ready,
        online,
        paper,
        cover_open,
        error,
    }
}
