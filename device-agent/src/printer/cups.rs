//! Printers behind a CUPS queue, printed raw: the job's ESC/POS bytes go
//! to the queue unfiltered (`document-format application/vnd.cups-raw`,
//! what `lp -o raw` sends), and the job's outcome is CUPS's.
//!
//! The driver speaks IPP/1.1 (RFC 8011) to cupsd itself, through the `ipp`
//! crate's blocking client, rather than running `lp`/`lpstat`/`cancel`:
//! IPP gives the job's exact `job-state` (`lpstat` shows completed,
//! aborted and canceled jobs alike), `time-at-processing` (whether CUPS
//! ever started sending the job to the printer, which decides whether a
//! cancelled job can have printed), and typed status codes instead of
//! localized text to parse; the bytes travel in the request body, never
//! through a file, and no child process is left behind on a timeout.
//!
//! Delivery (DESIGN.md, "Print jobs"): [`PrinterDriver::hand_over`]
//! returns `Ok` only once CUPS reports the job `completed`, which for a
//! raw queue means its backend (`socket`, `usb`, `file`, ...) took every
//! byte and ended without an error. A job that makes no progress for the
//! printer's `timeout` is cancelled, so that it cannot print later behind
//! the agent's back.
//!
//! The client talks TCP only: the server is the configured `server`, else
//! `CUPS_SERVER` when it names a host, else `localhost:631` (where
//! Debian's cupsd listens besides its local socket).

use std::io;
use std::time::{Duration, Instant};

use ipp::prelude::*;
use kiosk_schemas::{PaperStatus, PrinterStatus};

use super::{PrinterDriver, PrinterError, Progress, not_ready};

/// IPP's port, used when the server has none.
pub const DEFAULT_PORT: u16 = 631;

/// The server when neither `server` nor `CUPS_SERVER` names one.
pub const DEFAULT_SERVER: &str = "localhost:631";

/// What `lp -o raw` sends as the document format: CUPS runs no filter.
const RAW_FORMAT: &str = "application/vnd.cups-raw";

/// Longest pause between two looks at a job's state.
const POLL_MAX: Duration = Duration::from_millis(100);

/// Shortest timeout used (a zero timeout would give up before asking).
const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// Prints to one CUPS queue.
#[derive(Debug)]
pub struct CupsDriver {
    queue: String,
    /// `host:port`, the port defaulted.
    server: String,
    timeout: Duration,
    /// `requesting-user-name`; CUPS lets a job's owner cancel it.
    user: String,
}

/// Why an IPP request got no IPP answer.
#[derive(Debug)]
enum CallError {
    /// The request cannot have reached cupsd: the server did not resolve
    /// or refused the connection.
    NotSent(String),
    /// The request may have reached cupsd (the answer was lost, timed out
    /// or was not IPP).
    Unknown(String),
}

impl CallError {
    fn message(&self) -> &str {
        match self {
            CallError::NotSent(m) | CallError::Unknown(m) => m,
        }
    }
}

/// A queue's state as Get-Printer-Attributes reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueueView {
    /// `printer-state`; `None` when missing or unknown.
    state: Option<PrinterState>,
    /// `printer-is-accepting-jobs`; missing counts as accepting.
    accepting: bool,
    /// `printer-state-message`, e.g. the reason given to `cupsdisable -r`.
    message: String,
    /// `printer-state-reasons` other than `none`.
    reasons: Vec<String>,
}

/// A job's state as Get-Job-Attributes reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JobView {
    /// `job-state`; `None` when missing or unknown.
    state: Option<JobState>,
    /// `job-state-reasons`, e.g. `job-printing`, `printer-stopped`.
    reasons: Vec<String>,
    /// `job-printer-state-message` or `job-state-message`, if any.
    message: String,
    /// `time-at-processing` is set: CUPS started the job's backend, so
    /// some of its bytes may have reached the printer.
    started: bool,
}

/// What a [`JobView`] means for the hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// `completed`: every byte went to the printer.
    Printed,
    /// Still pending, held or processing: keep waiting.
    Waiting,
    /// `canceled`, `aborted` or `processing-stopped`: the job ended (or
    /// halted) without completing; the reason says how.
    Failed(String),
}

impl CupsDriver {
    /// A driver for CUPS queue `queue` on `server` (`host:port` or `host`,
    /// port 631 by default; `None`: `CUPS_SERVER` if it names a host,
    /// else `localhost:631`). `timeout` bounds each IPP request and how
    /// long a job may make no progress. Nothing is contacted yet.
    pub fn new(queue: &str, server: Option<&str>, timeout: Duration) -> Self {
        let server = server
            .map(str::to_owned)
            .or_else(|| std::env::var("CUPS_SERVER").ok().and_then(env_server))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        CupsDriver {
            queue: queue.trim().to_owned(),
            server: with_default_port(server.trim()),
            timeout: timeout.max(MIN_TIMEOUT),
            user: std::env::var("USER")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "kiosk-agent".to_owned()),
        }
    }

    /// The server asked, `host:port`.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn error(&self, reason: String, nothing_written: bool) -> PrinterError {
        PrinterError::Cups {
            target: self.describe(),
            reason,
            nothing_written,
        }
    }

    fn printer_uri(&self) -> Result<Uri, PrinterError> {
        format!("ipp://{}/printers/{}", self.server, self.queue)
            .parse()
            .map_err(|e| self.error(format!("invalid queue or server: {e}"), true))
    }

    /// Sends one request and parses the answer, within the timeout.
    fn call(
        &self,
        uri: &Uri,
        request: impl Into<IppRequestResponse>,
    ) -> Result<IppRequestResponse, CallError> {
        let client = IppClient::builder(uri.clone())
            .request_timeout(self.timeout)
            .build();
        client.send(request).map_err(|e| {
            let message = format!("cups not reachable at {}: {e}", self.server);
            if not_sent(&e) {
                CallError::NotSent(message)
            } else {
                CallError::Unknown(message)
            }
        })
    }

    fn queue_view(&self) -> Result<QueueView, String> {
        let uri = self.printer_uri().map_err(|e| e.to_string())?;
        let op = IppOperationBuilder::get_printer_attributes(uri.clone())
            .attributes([
                "printer-state",
                "printer-state-message",
                "printer-state-reasons",
                "printer-is-accepting-jobs",
            ])
            .build()
            .map_err(|e| format!("cannot build IPP request: {e}"))?;
        let answer = self.call(&uri, op).map_err(|e| e.message().to_owned())?;
        match answer.header().status_code() {
            s if s.is_success() => Ok(parse_queue(&answer)),
            StatusCode::ClientErrorNotFound => Err(format!("cups queue {} not found", self.queue)),
            s => Err(format!(
                "cups answered {s} for queue {}{}",
                self.queue,
                status_message(&answer)
            )),
        }
    }

    fn job_view(&self, uri: &Uri, job_id: i32) -> Result<JobView, String> {
        let op = IppOperationBuilder::get_job_attributes(uri.clone(), job_id)
            .user_name(&self.user)
            .build()
            .map_err(|e| format!("cannot build IPP request: {e}"))?;
        let answer = self.call(uri, op).map_err(|e| e.message().to_owned())?;
        let status = answer.header().status_code();
        if !status.is_success() {
            return Err(format!(
                "cups answered {status} for job {job_id}{}",
                status_message(&answer)
            ));
        }
        Ok(parse_job(&answer))
    }

    /// Cancel-Job; true when CUPS says it is cancelled.
    fn cancel(&self, uri: &Uri, job_id: i32) -> Result<(), String> {
        let op = IppOperationBuilder::cancel_job(uri.clone(), job_id)
            .user_name(&self.user)
            .build()
            .map_err(|e| format!("cannot build IPP request: {e}"))?;
        let answer = self.call(uri, op).map_err(|e| e.message().to_owned())?;
        let status = answer.header().status_code();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{status}{}", status_message(&answer)))
        }
    }

    /// After `why` (no progress within the timeout, or a stopped job):
    /// cancels the job so it cannot print later, then looks once more. The
    /// job may have completed in the meantime, which is a success; it
    /// did not print only if CUPS never started it and the cancel held.
    fn give_up(
        &self,
        uri: &Uri,
        job_id: i32,
        why: String,
        mut started: bool,
        bytes: u64,
        progress: &Progress,
    ) -> Result<(), PrinterError> {
        let cancelled = self.cancel(uri, job_id);
        let after = self.job_view(uri, job_id);
        if let Ok(view) = &after {
            started |= view.started;
            if view.state == Some(JobState::Completed) {
                if progress.get() == 0 {
                    progress.add(bytes);
                }
                return Ok(());
            }
        }
        let confirmed = matches!(&after, Ok(v) if v.state == Some(JobState::Canceled));
        let nothing_written = cancelled.is_ok() && confirmed && !started;
        let outcome = match (&cancelled, &after) {
            (Ok(()), Ok(v)) => format!("cancelled (now {})", describe_job(v)),
            (Ok(()), Err(e)) => format!("cancelled, then {e}"),
            (Err(e), _) => format!("cancel failed: {e}; the job may still print"),
        };
        if started && progress.get() == 0 {
            progress.add(bytes);
        }
        Err(self.error(
            format!("job {}-{job_id} {why}; {outcome}", self.queue),
            nothing_written,
        ))
    }
}

impl PrinterDriver for CupsDriver {
    fn describe(&self) -> String {
        format!("cups {} at {}", self.queue, self.server)
    }

    fn status(&mut self) -> PrinterStatus {
        match self.queue_view() {
            Ok(view) => queue_status(&self.queue, &view),
            Err(error) => not_ready(error),
        }
    }

    /// Print-Job, then Get-Job-Attributes until the job ends. `progress`
    /// stays 0 while CUPS only holds the job and moves to the job's size
    /// once CUPS started sending it to the printer (CUPS does not say how
    /// much of it the printer took).
    fn hand_over(&mut self, bytes: &[u8], progress: &Progress) -> Result<(), PrinterError> {
        let uri = self.printer_uri()?;
        let total = bytes.len() as u64;
        // The crate wants an owned reader; the copy lives as long as the call.
        let payload = IppPayload::new(io::Cursor::new(bytes.to_vec()));
        let op = IppOperationBuilder::print_job(uri.clone(), payload)
            .user_name(&self.user)
            .job_title("kiosk-fleet")
            .document_format(RAW_FORMAT)
            .build()
            .map_err(|e| self.error(format!("cannot build IPP request: {e}"), true))?;
        let answer = self.call(&uri, op).map_err(|e| match e {
            CallError::NotSent(m) => self.error(m, true),
            // The job may exist in CUPS without the agent knowing its id.
            CallError::Unknown(m) => self.error(format!("{m}; the job may still print"), false),
        })?;
        let status = answer.header().status_code();
        if !status.is_success() {
            // An IPP error answer means no job was created.
            return Err(self.error(
                format!("cups refused the job: {status}{}", status_message(&answer)),
                true,
            ));
        }
        let Some(job_id) = job_id(&answer) else {
            return Err(self.error("cups accepted the job but gave no job-id".to_owned(), false));
        };
        tracing::debug!(printer = %self.describe(), job_id, "job queued in cups");

        let poll = (self.timeout / 10).clamp(Duration::from_millis(5), POLL_MAX);
        let mut last: Option<JobView> = None;
        let mut started = false;
        let mut deadline = Instant::now() + self.timeout;
        loop {
            let last_error = match self.job_view(&uri, job_id) {
                Ok(view) => {
                    if view.started && !started {
                        started = true;
                        progress.add(total);
                    }
                    match verdict(&view) {
                        Verdict::Printed => {
                            if !started {
                                progress.add(total);
                            }
                            return Ok(());
                        }
                        Verdict::Failed(why) if view.state == Some(JobState::ProcessingStopped) => {
                            return self.give_up(&uri, job_id, why, started, total, progress);
                        }
                        Verdict::Failed(why) => {
                            // Someone (an operator, CUPS itself) ended it:
                            // not retried, even if it never started, or a
                            // job cancelled in CUPS would come back.
                            return Err(
                                self.error(format!("job {}-{job_id} {why}", self.queue), false)
                            );
                        }
                        Verdict::Waiting => {}
                    }
                    if last.as_ref() != Some(&view) {
                        deadline = Instant::now() + self.timeout;
                        last = Some(view);
                    }
                    None
                }
                Err(e) => Some(e),
            };
            if Instant::now() >= deadline {
                let why = match (&last_error, &last) {
                    (Some(e), _) => format!("could not be followed: {e}"),
                    (None, Some(v)) => format!(
                        "made no progress for {} ms ({})",
                        self.timeout.as_millis(),
                        describe_job(v)
                    ),
                    (None, None) => "made no progress".to_owned(),
                };
                return self.give_up(&uri, job_id, why, started, total, progress);
            }
            std::thread::sleep(poll);
        }
    }
}

/// `CUPS_SERVER` names a host (`host`, `host:port`, maybe with a
/// `/version=...` suffix), not a local socket path.
fn env_server(value: String) -> Option<String> {
    let host = value.split('/').next().unwrap_or("").trim();
    (!host.is_empty()).then(|| host.to_owned())
}

/// Adds `:631` when `server` has no port.
fn with_default_port(server: &str) -> String {
    let has_port = match server.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        server.to_owned()
    } else if server.contains(':') && !server.starts_with('[') {
        format!("[{server}]:{DEFAULT_PORT}")
    } else {
        format!("{server}:{DEFAULT_PORT}")
    }
}

/// True when `e` shows the request never reached the server.
fn not_sent(e: &IppError) -> bool {
    let io_not_sent = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::NotFound
                | io::ErrorKind::AddrNotAvailable
        )
    };
    match e {
        IppError::ClientError(ureq::Error::HostNotFound)
        | IppError::ClientError(ureq::Error::ConnectionFailed)
        | IppError::ClientError(ureq::Error::Timeout(
            ureq::Timeout::Resolve | ureq::Timeout::Connect,
        )) => true,
        IppError::ClientError(ureq::Error::Io(e)) | IppError::IoError(e) => io_not_sent(e),
        _ => false,
    }
}

fn group(answer: &IppRequestResponse, tag: DelimiterTag) -> Option<&IppAttributeGroup> {
    answer.attributes().groups_of(tag).next()
}

fn keywords(value: &IppValue) -> Vec<String> {
    value
        .into_iter()
        .filter_map(|v| match v {
            IppValue::Keyword(k) => Some(k.to_string()),
            _ => None,
        })
        .filter(|k| k != "none")
        .collect()
}

fn text(value: &IppValue) -> Option<String> {
    match value {
        IppValue::TextWithoutLanguage(t) | IppValue::TextWithLanguage { text: t, .. } => {
            Some(t.to_string()).filter(|t| !t.is_empty())
        }
        _ => None,
    }
}

/// `status-message` of an answer, as `": <message>"`, or nothing.
fn status_message(answer: &IppRequestResponse) -> String {
    group(answer, DelimiterTag::OperationAttributes)
        .and_then(|g| g.get("status-message"))
        .and_then(|a| text(a.value()))
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

fn job_id(answer: &IppRequestResponse) -> Option<i32> {
    match group(answer, DelimiterTag::JobAttributes)?
        .get(IppAttribute::JOB_ID)?
        .value()
    {
        IppValue::Integer(id) => Some(*id),
        _ => None,
    }
}

fn parse_queue(answer: &IppRequestResponse) -> QueueView {
    let g = group(answer, DelimiterTag::PrinterAttributes);
    let get = |name: &str| g.and_then(|g| g.get(name)).map(IppAttribute::value);
    QueueView {
        state: match get("printer-state") {
            Some(IppValue::Enum(v)) => PrinterState::from_i32(*v),
            _ => None,
        },
        accepting: !matches!(
            get("printer-is-accepting-jobs"),
            Some(IppValue::Boolean(false))
        ),
        message: get("printer-state-message")
            .and_then(text)
            .unwrap_or_default(),
        reasons: get("printer-state-reasons")
            .map(keywords)
            .unwrap_or_default(),
    }
}

fn parse_job(answer: &IppRequestResponse) -> JobView {
    let g = group(answer, DelimiterTag::JobAttributes);
    let get = |name: &str| g.and_then(|g| g.get(name)).map(IppAttribute::value);
    JobView {
        state: match get("job-state") {
            Some(IppValue::Enum(v)) => JobState::from_i32(*v),
            _ => None,
        },
        reasons: get("job-state-reasons").map(keywords).unwrap_or_default(),
        message: get("job-printer-state-message")
            .and_then(text)
            .or_else(|| get("job-state-message").and_then(text))
            .unwrap_or_default(),
        started: matches!(get("time-at-processing"), Some(IppValue::Integer(t)) if *t > 0),
    }
}

/// Ready when the queue exists, accepts jobs and is not stopped (a
/// disabled queue keeps accepting but holds every job). CUPS raw queues
/// say nothing of paper.
fn queue_status(queue: &str, view: &QueueView) -> PrinterStatus {
    let detail = || {
        if !view.message.is_empty() {
            view.message.clone()
        } else if !view.reasons.is_empty() {
            view.reasons.join(", ")
        } else {
            "no reason given".to_owned()
        }
    };
    let error = if view.state == Some(PrinterState::Stopped) {
        Some(format!("cups queue {queue} is stopped: {}", detail()))
    } else if !view.accepting {
        Some(format!(
            "cups queue {queue} is not accepting jobs: {}",
            detail()
        ))
    } else {
        None
    };
    match error {
        Some(error) => not_ready(error),
        None => PrinterStatus {
            ready: true,
            online: true,
            paper: PaperStatus::Unknown,
            cover_open: false,
            error: None,
        },
    }
}

fn describe_job(view: &JobView) -> String {
    let state = match view.state {
        Some(JobState::Pending) => "pending",
        Some(JobState::PendingHeld) => "held",
        Some(JobState::Processing) => "processing",
        Some(JobState::ProcessingStopped) => "stopped",
        Some(JobState::Canceled) => "canceled",
        Some(JobState::Aborted) => "aborted",
        Some(JobState::Completed) => "completed",
        None => "in an unknown state",
    };
    let mut out = state.to_owned();
    if !view.reasons.is_empty() {
        out.push_str(": ");
        out.push_str(&view.reasons.join(", "));
    }
    if !view.message.is_empty() {
        out.push_str(&format!(" \"{}\"", view.message));
    }
    out
}

fn verdict(view: &JobView) -> Verdict {
    match view.state {
        Some(JobState::Completed) => Verdict::Printed,
        Some(JobState::Canceled | JobState::Aborted | JobState::ProcessingStopped) => {
            Verdict::Failed(format!("ended {}", describe_job(view)))
        }
        Some(JobState::Pending | JobState::PendingHeld | JobState::Processing) | None => {
            Verdict::Waiting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(tag: DelimiterTag, attrs: Vec<(&str, IppValue)>) -> IppRequestResponse {
        let mut a =
            IppRequestResponse::new_response(IppVersion::v1_1(), StatusCode::SuccessfulOk, 1)
                .unwrap();
        for (name, value) in attrs {
            a.attributes_mut()
                .add(tag, IppAttribute::with_name(name, value).unwrap());
        }
        a
    }

    fn kw(k: &str) -> IppValue {
        IppValue::new_keyword(k).unwrap()
    }

    fn txt(t: &str) -> IppValue {
        IppValue::new_text_without_language(t).unwrap()
    }

    #[test]
    fn queue_states() {
        let idle = parse_queue(&answer(
            DelimiterTag::PrinterAttributes,
            vec![
                ("printer-state", IppValue::Enum(3)),
                ("printer-state-reasons", kw("none")),
                ("printer-is-accepting-jobs", IppValue::Boolean(true)),
            ],
        ));
        assert_eq!(
            idle,
            QueueView {
                state: Some(PrinterState::Idle),
                accepting: true,
                message: String::new(),
                reasons: vec![],
            }
        );
        let s = queue_status("kitchen", &idle);
        assert!(s.ready && s.online && s.error.is_none());
        assert_eq!(s.paper, PaperStatus::Unknown);

        let stopped = parse_queue(&answer(
            DelimiterTag::PrinterAttributes,
            vec![
                ("printer-state", IppValue::Enum(5)),
                ("printer-state-message", txt("paper jam at the bar")),
                ("printer-state-reasons", kw("paused")),
                ("printer-is-accepting-jobs", IppValue::Boolean(true)),
            ],
        ));
        let s = queue_status("kitchen", &stopped);
        assert!(!s.ready && !s.online);
        assert_eq!(
            s.error.as_deref(),
            Some("cups queue kitchen is stopped: paper jam at the bar")
        );
        let no_message = QueueView {
            message: String::new(),
            ..stopped
        };
        assert_eq!(
            queue_status("kitchen", &no_message).error.as_deref(),
            Some("cups queue kitchen is stopped: paused")
        );

        let rejecting = QueueView {
            state: Some(PrinterState::Idle),
            accepting: false,
            message: "Rejecting Jobs".to_owned(),
            reasons: vec![],
        };
        assert_eq!(
            queue_status("bar", &rejecting).error.as_deref(),
            Some("cups queue bar is not accepting jobs: Rejecting Jobs")
        );
    }

    #[test]
    fn job_states() {
        let job = |state: i32, processing: IppValue| {
            parse_job(&answer(
                DelimiterTag::JobAttributes,
                vec![
                    ("job-id", IppValue::Integer(7)),
                    ("job-state", IppValue::Enum(state)),
                    ("job-state-reasons", kw("job-printing")),
                    ("time-at-processing", processing),
                ],
            ))
        };
        let pending = job(3, IppValue::NoValue);
        assert_eq!(pending.state, Some(JobState::Pending));
        assert!(!pending.started);
        assert_eq!(verdict(&pending), Verdict::Waiting);
        let printing = job(5, IppValue::Integer(1_700_000_000));
        assert!(printing.started);
        assert_eq!(verdict(&printing), Verdict::Waiting);
        assert_eq!(verdict(&job(9, IppValue::Integer(1))), Verdict::Printed);
        assert_eq!(
            verdict(&job(8, IppValue::Integer(1))),
            Verdict::Failed("ended aborted: job-printing".to_owned())
        );
        assert!(matches!(
            verdict(&job(7, IppValue::NoValue)),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            verdict(&job(6, IppValue::Integer(1))),
            Verdict::Failed(_)
        ));

        let created = answer(
            DelimiterTag::JobAttributes,
            vec![("job-id", IppValue::Integer(42))],
        );
        assert_eq!(job_id(&created), Some(42));
        assert_eq!(
            job_id(&answer(DelimiterTag::PrinterAttributes, vec![])),
            None
        );
        let mut refused = answer(
            DelimiterTag::OperationAttributes,
            vec![(
                "status-message",
                txt("Destination \"x\" is not accepting jobs."),
            )],
        );
        refused.header_mut().operation_or_status = StatusCode::ServerErrorNotAcceptingJobs as i16;
        assert_eq!(
            status_message(&refused),
            ": Destination \"x\" is not accepting jobs."
        );
    }

    #[test]
    fn servers() {
        assert_eq!(with_default_port("localhost"), "localhost:631");
        assert_eq!(with_default_port("cups.lan:8631"), "cups.lan:8631");
        assert_eq!(with_default_port("::1"), "[::1]:631");
        assert_eq!(with_default_port("[::1]:632"), "[::1]:632");
        assert_eq!(env_server("/run/cups/cups.sock".to_owned()), None);
        assert_eq!(
            env_server("print.lan:631/version=1.1".to_owned()).as_deref(),
            Some("print.lan:631")
        );
        let d = CupsDriver::new("kitchen", Some("127.0.0.1:1"), Duration::ZERO);
        assert_eq!(d.describe(), "cups kitchen at 127.0.0.1:1");
        assert_eq!(
            d.printer_uri().unwrap().to_string(),
            "ipp://127.0.0.1:1/printers/kitchen"
        );
    }

    #[test]
    fn unreachable_server_is_not_ready_and_nothing_written() {
        // Port 1 on loopback: connection refused at once.
        let mut d = CupsDriver::new("kitchen", Some("127.0.0.1:1"), Duration::from_secs(2));
        let s = d.status();
        assert!(!s.ready && !s.online);
        assert!(
            s.error
                .unwrap()
                .contains("cups not reachable at 127.0.0.1:1")
        );
        let progress = Progress::default();
        let e = d.hand_over(b"x", &progress).unwrap_err();
        assert!(e.nothing_written(), "{e}");
        assert_eq!(progress.get(), 0);
    }
}
