//! An in-memory `escpos` driver: the `escpos` crate builds every ESC/POS
//! command, and this driver keeps the bytes instead of sending them, so the
//! caller decides where and when they go (a job, a status request).

use std::cell::RefCell;
use std::rc::Rc;

use escpos::driver::Driver;
use escpos::errors::Result as EscposResult;
use escpos::printer::Printer;
use escpos::printer_options::PrinterOptions;
use escpos::utils::{PageCode, Protocol};

/// Collects what an `escpos` [`Printer`] writes. Clones share the buffer,
/// so one clone goes into the printer and the other reads the bytes back.
#[derive(Clone, Default)]
pub(crate) struct Capture(Rc<RefCell<Vec<u8>>>);

impl Capture {
    /// Takes the bytes written so far, leaving the buffer empty.
    fn take(&self) -> Vec<u8> {
        self.0.take()
    }
}

impl Driver for Capture {
    fn name(&self) -> String {
        "capture".to_owned()
    }

    fn write(&self, data: &[u8]) -> EscposResult<()> {
        self.0.try_borrow_mut()?.extend_from_slice(data);
        Ok(())
    }

    fn read(&self, _buf: &mut [u8]) -> EscposResult<usize> {
        Ok(0)
    }

    fn flush(&self) -> EscposResult<()> {
        Ok(())
    }
}

/// Runs `build` on a fresh `escpos` printer and returns the bytes it
/// produced. `page_code` is what [`Printer::init`] selects (`ESC t n`) and
/// what [`Printer::write`] encodes text with; `columns` is characters per
/// line.
///
/// # Errors
/// Whatever `build` or `escpos` returns (bad barcode data, a page code
/// without a character table, ...).
pub(crate) fn capture(
    page_code: Option<PageCode>,
    columns: u8,
    build: impl FnOnce(&mut Printer<Capture>) -> EscposResult<()>,
) -> EscposResult<Vec<u8>> {
    let driver = Capture::default();
    let options = PrinterOptions::new(page_code, None, columns);
    let mut printer = Printer::new(driver.clone(), Protocol::default(), Some(options));
    build(&mut printer)?;
    printer.print()?;
    Ok(driver.take())
}
