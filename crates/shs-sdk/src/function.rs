//! The function: its handlers, its start-up subscriptions, and the dispatch of one request to
//! the right handler.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use shs_protocol::methods::{self, EventObject};
use shs_protocol::{Id, RpcError};

use crate::context::{Context, Link, log};
use crate::wire::{self, Incoming, Params};
use crate::{Error, RawOutput};

/// An event as a handler receives it: `id`, `event_type`, `source`, `time` and the `payload`
/// (a [`serde_json::Value`] unless the handler asks for a type of its own), its
/// `datacontenttype`, and `data_base64` when the data is bytes ([`event_data`] decodes it).
pub type Event<P = serde_json::Value> = EventObject<P, String>;

type InvokeFn =
    dyn for<'a> Fn(&'a RawValue, &Context<'_>) -> Result<RawOutput<'a>, Error> + Send + Sync;
type EventFn =
    dyn Fn(&wire::EventObjectIn<'_>, &Context<'_>) -> Result<Box<RawValue>, Error> + Send + Sync;
type SetupFn = dyn Fn(&Context<'_>) -> Result<(), Error> + Send + Sync;

/// The size of the stdin and stdout buffers.
pub(crate) const BUFFER: usize = 64 * 1024;

/// A function: its handlers and subscriptions. Build it, then [`Function::run`] it.
///
/// See the [crate documentation](crate) for a complete example.
pub struct Function {
    invoke: Option<Box<InvokeFn>>,
    events: HashMap<String, Box<EventFn>>,
    any_event: Option<Box<EventFn>>,
    subscriptions: Vec<String>,
    auto_subscribe: bool,
    setup: Option<Box<SetupFn>>,
    threads: usize,
    concurrency: Option<usize>,
    raw_body: bool,
}

impl Default for Function {
    fn default() -> Self {
        Self::new()
    }
}

/// What handling one line produced.
pub(crate) enum Outcome<'l> {
    /// An answer to write.
    Answer(Id, Result<RawOutput<'l>, RpcError>),
    /// `initialize` went well: answer with this (`{"concurrency":N}`, and `"raw_body":true`
    /// when asked for).
    Initialized(Id, Box<RawValue>),
    /// Nothing to write (a notification, a stray answer, a bad line).
    Nothing,
    /// Start-up failed: the process should exit with this message, without answering
    /// (after start-up, `initialize` again is answered with the message as an error).
    Fatal(Id, String),
}

impl Function {
    /// A function with no handlers yet.
    pub fn new() -> Self {
        Function {
            invoke: None,
            events: HashMap::new(),
            any_event: None,
            subscriptions: Vec::new(),
            auto_subscribe: true,
            setup: None,
            threads: 1,
            concurrency: None,
            raw_body: false,
        }
    }

    /// Asks for the raw body of HTTP requests ([`crate::Request::body`]) even when it is
    /// JSON (`"raw_body": true` in the answer to `initialize`).
    pub fn raw_body(mut self, on: bool) -> Self {
        self.raw_body = on;
        self
    }

    /// Handles `invoke` (`POST /run/NAME`): the input is the request body, deserialized into
    /// `I` (a [`serde_json::Value`], or any type of yours); the output `O` is serialized as
    /// the answer. An input that does not deserialize into `I` is answered with code
    /// `-32602`.
    pub fn on_invoke<I, O, F>(mut self, handler: F) -> Self
    where
        I: DeserializeOwned,
        O: Serialize,
        F: Fn(I, &Context<'_>) -> Result<O, Error> + Send + Sync + 'static,
    {
        self.invoke = Some(Box::new(
            move |raw: &RawValue, ctx: &Context<'_>| -> Result<RawOutput<'_>, Error> {
                let input: I = serde_json::from_str(raw.get())
                    .map_err(|e| Error::invalid_params(format!("invalid input: {e}")))?;
                let output = handler(input, ctx)?;
                Ok(RawOutput::Owned(to_raw(&output)?))
            },
        ));
        self
    }

    /// Handles `invoke` on the raw JSON text of the input, with no parsing at all: the
    /// fastest path. The handler may answer with the input itself (or any part of it)
    /// without copying, or with JSON of its own:
    ///
    /// ```
    /// # use shs_sdk::Function;
    /// // An echo: answers with its input, unchanged.
    /// let echo = Function::new().on_invoke_raw(|input, _ctx| Ok(input.into()));
    /// ```
    pub fn on_invoke_raw<F>(mut self, handler: F) -> Self
    where
        F: for<'a> Fn(&'a RawValue, &Context<'_>) -> Result<RawOutput<'a>, Error>
            + Send
            + Sync
            + 'static,
    {
        self.invoke = Some(Box::new(handler));
        self
    }

    /// Handles events of exactly this type (no patterns: use [`Function::on_any_event`] for
    /// what a pattern subscription brings in). The payload is deserialized into `P`; the
    /// handler's output is the answer to the delivery, which the supervisor does not use
    /// (return `Ok(())`). An error answer makes the delivery a failure, listed in the
    /// publisher's `errors`.
    ///
    /// Unless [`Function::auto_subscribe`] is turned off, the function also subscribes to
    /// `event_type` at start-up.
    pub fn on_event<P, O, F>(mut self, event_type: impl Into<String>, handler: F) -> Self
    where
        P: DeserializeOwned + 'static,
        O: Serialize + 'static,
        F: Fn(Event<P>, &Context<'_>) -> Result<O, Error> + Send + Sync + 'static,
    {
        self.events
            .insert(event_type.into(), Box::new(event_handler(handler)));
        self
    }

    /// Handles every event that no [`Function::on_event`] handler takes: types subscribed to
    /// by pattern, in `function.toml`, or later with [`Context::subscribe`].
    pub fn on_any_event<P, O, F>(mut self, handler: F) -> Self
    where
        P: DeserializeOwned + 'static,
        O: Serialize + 'static,
        F: Fn(Event<P>, &Context<'_>) -> Result<O, Error> + Send + Sync + 'static,
    {
        self.any_event = Some(Box::new(event_handler(handler)));
        self
    }

    /// Subscribes to an event type or pattern at start-up, before the function answers
    /// `initialize`: the subscription is in force before the first event can arrive.
    pub fn subscribe(mut self, pattern: impl Into<String>) -> Self {
        self.subscriptions.push(pattern.into());
        self
    }

    /// Whether each [`Function::on_event`] type is subscribed to at start-up (the default:
    /// `true`).
    pub fn auto_subscribe(mut self, on: bool) -> Self {
        self.auto_subscribe = on;
        self
    }

    /// Runs `setup` at start-up, before the function answers `initialize` (after the
    /// start-up subscriptions are made). It may publish, subscribe and unsubscribe. If it
    /// fails, the process logs why and exits: the supervisor then reports that it could not
    /// start, with the log's last lines.
    pub fn setup<F>(mut self, setup: F) -> Self
    where
        F: Fn(&Context<'_>) -> Result<(), Error> + Send + Sync + 'static,
    {
        self.setup = Some(Box::new(setup));
        self
    }

    /// Handles requests on `n` threads (default 1). Set it to the function's `concurrency`
    /// (in `function.toml`) when handlers block, for instance on [`Context::publish`]: with
    /// one thread, requests that arrive while a handler waits are handled after it returns,
    /// so a handler that waits for another request of its own process (publishing an event
    /// the function itself subscribes to) would wait for its timeout.
    ///
    /// With 1 thread, everything runs on the thread that called [`Function::run`], and
    /// answers to requests that arrive together are written together.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Declares how many requests the supervisor may send this function's process at once
    /// (`"concurrency"` in the answer to `initialize`; a `concurrency` in `function.toml`
    /// wins). The default is the number of [`Function::threads`]: what the process really
    /// handles at once. Declare more on one thread only for handlers that never wait for a
    /// request of their own process (an echo, a pure computation): requests then queue in the
    /// pipe and are answered in order, several per write. Bounded to 1..=65,536.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n.clamp(1, 65_536));
        self
    }

    /// What the answer to `initialize` declares: the concurrency, and `raw_body`.
    fn initialize_answer(&self) -> Box<RawValue> {
        let concurrency = self.concurrency.unwrap_or(self.threads);
        let text = if self.raw_body {
            format!(r#"{{"concurrency":{concurrency},"raw_body":true}}"#)
        } else {
            format!(r#"{{"concurrency":{concurrency}}}"#)
        };
        // An object of a number (and a boolean) is valid JSON; the conversion cannot fail.
        RawValue::from_string(text).unwrap_or_default()
    }

    /// Serves the supervisor over stdin and stdout until stdin closes; then finishes the
    /// requests in flight and returns `Ok(())`, so that `main` exits with status 0.
    ///
    /// If start-up fails ([`Function::setup`], or a start-up subscription the supervisor
    /// refuses), it logs why and exits with status 1 without answering `initialize`: the
    /// supervisor reports a failed start, with the log's last lines. An error means stdin or
    /// stdout failed; returned from `main`, it exits with status 1.
    pub fn run(self) -> io::Result<()> {
        // Own descriptors, buffered here only (no second buffer or lock in std's handles).
        let stdin = std::fs::File::from(io::stdin().as_fd().try_clone_to_owned()?);
        let stdout = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
        match self.run_with(stdin, stdout) {
            Err(e)
                if e.get_ref()
                    .is_some_and(|e| e.is::<crate::run::StartUpFailed>()) =>
            {
                std::process::exit(1)
            }
            ended => ended,
        }
    }

    /// [`Function::run`] over other streams: the supervisor's lines are read from `input`,
    /// the function's lines are written to `output`. For tests. A failed start-up is an
    /// error here (with the message that was logged), not an exit.
    pub fn run_with<R: Read, W: Write + Send>(self, input: R, output: W) -> io::Result<()> {
        crate::run::run(&self, input, output, self.threads)
    }

    /// The start-up subscriptions: declared ones, then those of the event handlers.
    fn startup_subscriptions(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.subscriptions.iter().map(String::as_str).collect();
        if self.auto_subscribe {
            let mut types: Vec<&str> = self.events.keys().map(String::as_str).collect();
            types.sort_unstable();
            all.extend(types);
        }
        let mut seen = std::collections::HashSet::new();
        all.retain(|p| seen.insert(*p));
        all
    }

    /// Handles one line from the supervisor.
    pub(crate) fn handle<'l>(&self, line: &'l [u8], link: &dyn Link) -> Outcome<'l> {
        match wire::classify(line) {
            Ok(Incoming::Request { id, method, params }) => {
                let outcome = match &*method {
                    methods::INVOKE => self.invoke(&id, params, link),
                    methods::EVENT => self.event(params, link),
                    methods::INITIALIZE => {
                        return match self.initialize(params, link) {
                            Ok(()) => Outcome::Initialized(id, self.initialize_answer()),
                            Err(message) => Outcome::Fatal(id, message),
                        };
                    }
                    other => Err(RpcError::new(
                        Error::METHOD_NOT_FOUND,
                        format!("method not found: {other:?}"),
                    )),
                };
                Outcome::Answer(id, outcome)
            }
            Ok(Incoming::Notification { method }) => {
                log(format_args!("shs-sdk: ignoring a notification {method:?}"));
                Outcome::Nothing
            }
            Ok(Incoming::Answer { id, .. }) => {
                let id = id.map_or_else(|| "null".to_owned(), |id| id.to_string());
                log(format_args!(
                    "shs-sdk: ignoring an answer with an id nobody waits for: {id}"
                ));
                Outcome::Nothing
            }
            Err(e) => {
                log(format_args!("shs-sdk: ignoring a stdin line: {e}"));
                Outcome::Nothing
            }
        }
    }

    fn invoke<'l>(
        &self,
        id: &Id,
        params: Result<Params<'l>, String>,
        link: &dyn Link,
    ) -> Result<RawOutput<'l>, RpcError> {
        let Some(handler) = &self.invoke else {
            return Err(RpcError::new(
                Error::METHOD_NOT_FOUND,
                "method not found: \"invoke\" (this function has no invoke handler)",
            ));
        };
        let params = params.map_err(invalid_params)?;
        let Some(input) = params.input else {
            return Err(invalid_params(
                "invalid params: missing field `input`".into(),
            ));
        };
        let ctx = Context::new(
            &params.context.request_id,
            &params.context.function,
            methods::INVOKE,
            link,
        )
        .for_invoke(id, params.http)
        .with_schedule(params.context.schedule.map(|s| *s));
        guarded(|| handler(input, &ctx))
    }

    fn event<'l>(
        &self,
        params: Result<Params<'l>, String>,
        link: &dyn Link,
    ) -> Result<RawOutput<'l>, RpcError> {
        let params = params.map_err(invalid_params)?;
        let Some(event) = &params.event else {
            return Err(invalid_params(
                "invalid params: missing field `event`".into(),
            ));
        };
        let handler = self
            .events
            .get(&*event.event_type)
            .or(self.any_event.as_ref());
        let Some(handler) = handler else {
            return Err(RpcError::new(
                Error::METHOD_NOT_FOUND,
                format!("no handler for event type {:?}", event.event_type.as_ref()),
            ));
        };
        let ctx = Context::new(
            &params.context.request_id,
            &params.context.function,
            methods::EVENT,
            link,
        );
        guarded(|| handler(event, &ctx).map(RawOutput::Owned))
    }

    /// Makes the start-up subscriptions and runs setup; an error is why the process must
    /// stop.
    fn initialize(
        &self,
        params: Result<Params<'_>, String>,
        link: &dyn Link,
    ) -> Result<(), String> {
        let params = params.unwrap_or_else(|e| {
            log(format_args!("shs-sdk: initialize: {e}"));
            Params::default()
        });
        let ctx = Context::new("", &params.function, methods::INITIALIZE, link);
        for pattern in self.startup_subscriptions() {
            ctx.subscribe(pattern)
                .map_err(|e| format!("shs-sdk: start-up failed: {}", e.message()))?;
        }
        if let Some(setup) = &self.setup {
            guarded(|| setup(&ctx).map(|()| RawOutput::Borrowed(empty_object())))
                .map_err(|e| format!("shs-sdk: start-up failed: {}", e.message))?;
        }
        Ok(())
    }
}

fn invalid_params(message: String) -> RpcError {
    RpcError::new(Error::INVALID_PARAMS, message)
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut events: Vec<&String> = self.events.keys().collect();
        events.sort_unstable();
        f.debug_struct("Function")
            .field("invoke", &self.invoke.is_some())
            .field("events", &events)
            .field("any_event", &self.any_event.is_some())
            .field("subscriptions", &self.subscriptions)
            .field("auto_subscribe", &self.auto_subscribe)
            .field("setup", &self.setup.is_some())
            .field("threads", &self.threads)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// Wraps a typed event handler into the erased form.
fn event_handler<P, O, F>(
    handler: F,
) -> impl Fn(&wire::EventObjectIn<'_>, &Context<'_>) -> Result<Box<RawValue>, Error> + Send + Sync
where
    P: DeserializeOwned,
    O: Serialize,
    F: Fn(Event<P>, &Context<'_>) -> Result<O, Error> + Send + Sync + 'static,
{
    move |event, ctx| {
        let payload = event.payload.map_or("null", RawValue::get);
        let payload: P = serde_json::from_str(payload)
            .map_err(|e| Error::invalid_params(format!("invalid event payload: {e}")))?;
        let event = Event {
            id: event.id.to_string(),
            event_type: event.event_type.to_string(),
            source: event.source.to_string(),
            time: event.time.to_string(),
            payload,
            datacontenttype: event.datacontenttype.as_deref().map(str::to_owned),
            data_base64: event.data_base64.as_deref().map(str::to_owned),
        };
        to_raw(&handler(event, ctx)?)
    }
}

fn to_raw<T: Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, Error> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| Error::new(format!("the handler's result is not JSON: {e}")))
}

pub(crate) fn empty_object() -> &'static RawValue {
    // `{}` is valid JSON; the conversion cannot fail.
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| RawValue::from_string("{}".to_owned()).unwrap_or_default())
}

/// Runs a handler; a panic becomes an error answer (-32000) rather than the end of the
/// process (the panic message is on stderr already, from the panic hook).
fn guarded<'l>(
    handler: impl FnOnce() -> Result<RawOutput<'l>, Error>,
) -> Result<RawOutput<'l>, RpcError> {
    match catch_unwind(AssertUnwindSafe(handler)) {
        Ok(outcome) => outcome.map_err(Error::into_rpc),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the handler panicked".to_owned());
            Err(RpcError::new(
                Error::FUNCTION_ERROR,
                format!("panicked: {message}"),
            ))
        }
    }
}
