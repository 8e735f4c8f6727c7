//! Declaring a service's metrics in one place, so that none can be declared and left
//! unregistered. [`metrics!`](crate::metrics!) turns a struct of documented fields into
//! the struct and a `register` function that creates every field and registers it; the
//! doc comment of a field is its help text.
//!
//! ```
//! service_kit::metrics! {
//!     /// What the example counts.
//!     pub struct ExampleMetrics {
//!         /// Requests served, by route.
//!         requests: prometheus::IntCounterVec = "requests_total" ["route"],
//!         /// Time to answer.
//!         seconds: prometheus::Histogram = "request_seconds" buckets [0.001, 0.01, 0.1],
//!         /// Requests being served.
//!         in_flight: prometheus::IntGauge = "in_flight",
//!     }
//! }
//! let registry = prometheus::Registry::new();
//! let m = ExampleMetrics::register(&registry).unwrap();
//! m.requests.with_label_values(&["/"]).inc();
//! assert_eq!(registry.gather().len(), 3);
//! ```

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts,
};

/// A metric type [`metrics!`](crate::metrics!) knows how to create.
pub trait Declare: Collector + Clone + Sized + 'static {
    fn declare(name: &str, help: &str, labels: &[&str], buckets: Option<Vec<f64>>) -> prometheus::Result<Self>;
}

fn no_labels(name: &str, labels: &[&str]) -> prometheus::Result<()> {
    if labels.is_empty() {
        Ok(())
    } else {
        Err(prometheus::Error::Msg(format!("{name}: a metric without a vector type takes no labels")))
    }
}

macro_rules! scalar {
    ($($ty:ty),*) => {$(
        impl Declare for $ty {
            fn declare(name: &str, help: &str, labels: &[&str], _: Option<Vec<f64>>) -> prometheus::Result<Self> {
                no_labels(name, labels)?;
                <$ty>::new(name, help)
            }
        }
    )*};
}
scalar!(IntCounter, IntGauge, Counter, Gauge);

macro_rules! vector {
    ($($ty:ty),*) => {$(
        impl Declare for $ty {
            fn declare(name: &str, help: &str, labels: &[&str], _: Option<Vec<f64>>) -> prometheus::Result<Self> {
                <$ty>::new(Opts::new(name, help), labels)
            }
        }
    )*};
}
vector!(IntCounterVec, IntGaugeVec, CounterVec, GaugeVec);

fn histogram_opts(name: &str, help: &str, buckets: Option<Vec<f64>>) -> HistogramOpts {
    let opts = HistogramOpts::new(name, help);
    match buckets {
        Some(b) => opts.buckets(b),
        None => opts,
    }
}

impl Declare for Histogram {
    fn declare(name: &str, help: &str, labels: &[&str], buckets: Option<Vec<f64>>) -> prometheus::Result<Self> {
        no_labels(name, labels)?;
        Histogram::with_opts(histogram_opts(name, help, buckets))
    }
}

impl Declare for HistogramVec {
    fn declare(name: &str, help: &str, labels: &[&str], buckets: Option<Vec<f64>>) -> prometheus::Result<Self> {
        HistogramVec::new(histogram_opts(name, help, buckets), labels)
    }
}

/// Declares a metrics struct: every field is created from its name, labels and
/// buckets, its doc comment becomes the help text, and `register(&Registry)` registers
/// all of them. A field needs a doc comment (Prometheus needs help text).
#[macro_export]
macro_rules! metrics {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $field:ident : $ty:ty = $metric:literal
                    $( [ $($label:literal),* $(,)? ] )?
                    $( buckets [ $($bucket:expr),* $(,)? ] )?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone)]
        $vis struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        impl $name {
            /// The metrics' names, before the registry's prefix.
            pub const NAMES: &'static [&'static str] = &[$($metric),*];

            /// Creates every metric and registers it in `registry`.
            pub fn register(registry: &$crate::prometheus::Registry) -> $crate::prometheus::Result<Self> {
                let metrics = Self {
                    $(
                        $field: <$ty as $crate::metrics::Declare>::declare(
                            $metric,
                            concat!($($doc),+).trim(),
                            &[$($($label),*)?],
                            None $( .or(Some(vec![$($bucket),*])) )?,
                        )?,
                    )*
                };
                $( registry.register(Box::new(metrics.$field.clone()))?; )*
                Ok(metrics)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]

    crate::metrics! {
        /// Two of everything.
        struct Sample {
            /// Things counted.
            counted: prometheus::IntCounterVec = "counted_total" ["kind"],
            /// How long
            /// things took.
            took: prometheus::HistogramVec = "took_seconds" ["kind"] buckets [0.5, 1.0],
            /// A level.
            level: prometheus::IntGauge = "level",
        }
    }

    #[test]
    fn every_declared_metric_is_registered_with_its_doc_as_help() {
        let registry = prometheus::Registry::new_custom(Some("svc".into()), None).unwrap();
        let m = Sample::register(&registry).unwrap();
        m.counted.with_label_values(&["a"]).inc();
        m.took.with_label_values(&["a"]).observe(0.7);
        m.level.set(3);
        let text = crate::telemetry::render_metrics(&registry);
        assert!(text.contains("# HELP svc_took_seconds How long things took."), "{text}");
        assert!(text.contains("svc_took_seconds_bucket{kind=\"a\",le=\"1\"} 1"), "{text}");
        assert!(text.contains("svc_counted_total{kind=\"a\"} 1") && text.contains("svc_level 3"), "{text}");
        assert_eq!(Sample::NAMES, ["counted_total", "took_seconds", "level"]);
        // A second registration of the same names is refused, not silently ignored.
        assert!(Sample::register(&registry).is_err());
    }
}
