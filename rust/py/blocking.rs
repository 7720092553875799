//! Runs blocking core calls with the GIL released while keeping Python in charge: the
//! core calls the interrupt check every few tens of milliseconds, which briefly takes
//! the GIL to run Python's signal handlers, and callbacks into Python (progress) go
//! through the same gate. The first Python exception raised on the way (usually
//! `KeyboardInterrupt`) is what the caller sees.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::error::{Error, Result};
use crate::py::errors::to_pyerr;

/// Carries a Python exception across a core call that knows only `crate::Error`.
pub struct Gate {
    raised: Mutex<Option<PyErr>>,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            raised: Mutex::new(None),
        }
    }

    /// Runs Python code with the GIL; a Python exception becomes `Error::Interrupted`
    /// here and is re-raised when the core call returns.
    pub fn call<T>(&self, f: impl FnOnce(Python<'_>) -> PyResult<T>) -> Result<T> {
        Python::attach(f).map_err(|err| {
            self.raised.lock().expect("not poisoned").get_or_insert(err);
            Error::Interrupted
        })
    }

    /// Runs pending signal handlers (Ctrl-C).
    pub fn check_signals(&self) -> Result<()> {
        self.call(|py| py.check_signals())
    }

    fn finish<T>(self, result: Result<T>) -> PyResult<T> {
        match result {
            Ok(value) => Ok(value),
            Err(Error::Interrupted) => Err(self
                .raised
                .into_inner()
                .expect("not poisoned")
                .unwrap_or_else(|| to_pyerr(Error::Interrupted))),
            Err(err) => Err(to_pyerr(err)),
        }
    }
}

/// Calls `f` without the GIL. `f` gets the gate to check signals and call back.
pub fn without_gil<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: Send + FnOnce(&Gate) -> Result<T>,
{
    let gate = Gate::new();
    let result = py.detach(|| f(&gate));
    gate.finish(result)
}
