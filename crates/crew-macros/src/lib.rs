//! crew's attributes. Use them through the `crew` crate: `#[crew::main]`
//! and `#[crew::task]`.
#![deny(missing_docs)]

use proc_macro::TokenStream;
use quote::quote;
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input};

/// Makes `main` start with `crew::init()`, so the program can serve as its
/// own worker processes (and, with `CREW_WORKER` or `CREW_CELERY` set, as a
/// cluster or Celery node). It works on any `fn main`, including one that
/// returns a `Result`. (This crate cannot run its own examples; the crew
/// crate's front page, "In your own program", runs one as a test.)
///
/// ```ignore
/// #[crew::main]
/// fn main() {
///     let pool = crew::Pool::processes(4).unwrap();
///     // …
/// }
/// ```
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[crew::main] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let mut f = parse_macro_input!(item as ItemFn);
    if f.sig.ident != "main" {
        return syn::Error::new_spanned(&f.sig.ident, "#[crew::main] goes on `fn main`")
            .to_compile_error()
            .into();
    }
    let body = &f.block;
    f.block = syn::parse_quote!({
        ::crew::init();
        #body
    });
    quote!(#f).into()
}

/// Registers a function as a named task: under `module::path::name` (or
/// `#[crew::task(name = "…")]`) with a fingerprint of its signature, so it
/// can be called by name (`Executor::submit_named`) in this program's
/// workers, and by other programs that register the same name. Calling it
/// with other argument or result types fails at once with a clear error.
/// Called with JSON (as a Celery task), a function returning
/// `Result<T, E>` with `E: Display` gives `T` or, for `Err`, the exception
/// `crew::registry::JsonError::from_error` makes of `E` (Celery's
/// `FAILURE`); such a result without `Serialize` cannot be called by name
/// from Rust (that call fails with `is_invalid_input`).
///
/// ```ignore
/// #[crew::task]
/// fn square(x: u64) -> u64 { x * x }
/// ```
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let f = parse_macro_input!(item as ItemFn);
    let mut name_override: Option<syn::LitStr> = None;
    if !attr.is_empty() {
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                name_override = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error("expected `name = \"…\"`"))
            }
        });
        parse_macro_input!(attr with parser);
    }
    let ident = &f.sig.ident;
    if !f.sig.generics.params.is_empty() {
        return syn::Error::new_spanned(
            &f.sig.generics,
            "a #[crew::task] cannot be generic: it needs one signature to register",
        )
        .to_compile_error()
        .into();
    }
    let mut arg_types = Vec::new();
    let mut arg_names = Vec::new();
    for input in &f.sig.inputs {
        match input {
            FnArg::Typed(pat) => {
                arg_types.push((*pat.ty).clone());
                // A keyword argument names the parameter; a pattern that is
                // not a plain name is reachable by position only.
                arg_names.push(match &*pat.pat {
                    syn::Pat::Ident(p) => p.ident.to_string().trim_start_matches('_').to_owned(),
                    _ => String::new(),
                });
            }
            FnArg::Receiver(r) => {
                return syn::Error::new_spanned(r, "a #[crew::task] cannot take `self`")
                    .to_compile_error()
                    .into();
            }
        }
    }
    let ret = match &f.sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let name = match name_override {
        Some(lit) => quote!(#lit),
        None => {
            let s = ident.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #s))
        }
    };
    let args_ty = quote!((#(#arg_types,)*));
    let indices: Vec<syn::Index> = (0..arg_types.len()).map(syn::Index::from).collect();
    let positions: Vec<usize> = (0..arg_types.len()).collect();
    let count = arg_types.len();
    let expanded = quote! {
        #f

        const _: () = {
            fn __crew_thunk(input: &[u8]) -> ::core::result::Result<::std::vec::Vec<u8>, ::crew::Error> {
                let args: #args_ty = ::crew::registry::decode(input)?;
                let out: #ret = #ident(#(args.#indices,)*);
                // A result without `Serialize` (a `Result` whose error is
                // only `Display`) is for Celery's JSON path alone.
                use ::crew::registry::{BinOutOther as _, BinOutSerialize as _};
                (&::crew::registry::BinOut(&out)).crew_bin_out()
            }
            #[allow(unused_mut, unused_variables)]
            fn __crew_json(
                args: ::std::vec::Vec<::crew::registry::json::Value>,
                mut kwargs: ::crew::registry::json::Map<::std::string::String, ::crew::registry::json::Value>,
            ) -> ::core::result::Result<::crew::registry::json::Value, ::crew::registry::JsonError> {
                ::crew::registry::check_arity(&args, #count)?;
                let mut args = args.into_iter();
                let decoded: #args_ty = (#(
                    ::crew::registry::json_arg::<#arg_types>(&mut args, &mut kwargs, #positions, #arg_names)?,
                )*);
                ::crew::registry::check_no_kwargs(&kwargs)?;
                let out: #ret = #ident(#(decoded.#indices,)*);
                // `Result<T, E: Display>` is a value or an exception;
                // anything else is a value.
                use ::crew::registry::{JsonOutPlain as _, JsonOutResult as _};
                (&::crew::registry::JsonOut(&out)).crew_json_out()
            }
            fn __crew_signature() -> ::crew::registry::Signature {
                ::crew::registry::Signature::of::<#args_ty, #ret>()
            }
            ::crew::registry::submit! {
                ::crew::registry::TaskEntry::new(#name, __crew_signature, __crew_thunk, __crew_json)
            }
        };
    };
    expanded.into()
}
