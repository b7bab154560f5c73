//! How a task is invoked: `map` calls `f(item)`, `starmap`/`apply`/`submit`
//! call `f(a, b, …)` with a tuple of arguments. [`Call`] names both so the
//! machinery is written once.

/// A task function applied to one input `X`, producing `R`.
///
/// Implemented by [`Unary`] (`f(x)`) and [`Star`] (`f(a, b, …)` from a tuple,
/// up to 8 arguments). Back-ends run `Call`s; users never implement it.
///
/// # Examples
///
/// Code written once against `Call` runs either shape of task:
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Call, Star, Unary};
///
/// fn run_all<X, R>(task: &impl Call<X, R>, inputs: Vec<X>) -> Vec<R> {
///     inputs.into_iter().map(|x| task.call(x)).collect()
/// }
///
/// assert_eq!(run_all(&Unary(|x: i32| -x), vec![1, 2]), [-1, -2]);
/// assert_eq!(run_all(&Star(|a: i32, b: i32| a - b), vec![(5, 1), (3, 3)]), [4, 0]);
/// ```
pub trait Call<X, R> {
    /// Runs the task on `input`.
    fn call(&self, input: X) -> R;

    /// The type name ([`std::any::type_name`]) of the function this task
    /// calls, if it has one: a timeline names the task's spans after it
    /// (trimmed by [`task_name`](crate::task_name)).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use crew::core::{Call, Unary};
    ///
    /// fn square(x: u32) -> u32 {
    ///     x * x
    /// }
    ///
    /// let name = Call::<u32, u32>::name(&Unary(square)).unwrap();
    /// assert!(name.ends_with("::square"));
    /// ```
    fn name(&self) -> Option<&'static str> {
        None
    }

    /// True for a call of a task by its registered name (`#[crew::task]`),
    /// whose input is then a `crew_process::remote::NamedCall`: a cluster
    /// routes it by name and signature rather than by build.
    #[doc(hidden)]
    fn by_name(&self) -> bool {
        false
    }
}

/// `f(x)`: the task of `map`, `imap` and `imap_unordered`.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Call, Unary};
/// assert_eq!(Unary(|x: u32| x + 1).call(1), 2);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Unary<F>(pub F);

impl<F, X, R> Call<X, R> for Unary<F>
where
    F: Fn(X) -> R,
{
    fn call(&self, input: X) -> R {
        (self.0)(input)
    }

    fn name(&self) -> Option<&'static str> {
        Some(std::any::type_name::<F>())
    }
}

/// `f(a, b, …)` applied to a tuple `(a, b, …)`: the task of `starmap`,
/// `apply` and `submit`.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Call, Star};
/// assert_eq!(Star(|a: u32, b: u32| a * b).call((6, 7)), 42);
/// assert_eq!(Star(|| 5).call(()), 5);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Star<F>(pub F);

macro_rules! star {
    ($($a:ident),*) => {
        impl<F, R, $($a,)*> Call<($($a,)*), R> for Star<F>
        where
            F: Fn($($a),*) -> R,
        {
            #[allow(non_snake_case)]
            fn call(&self, ($($a,)*): ($($a,)*)) -> R {
                (self.0)($($a),*)
            }

            fn name(&self) -> Option<&'static str> {
                Some(std::any::type_name::<F>())
            }
        }
    };
}

star!();
star!(A);
star!(A, B);
star!(A, B, C);
star!(A, B, C, D);
star!(A, B, C, D, E);
star!(A, B, C, D, E, G);
star!(A, B, C, D, E, G, H);
star!(A, B, C, D, E, G, H, I);
