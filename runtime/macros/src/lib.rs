//! `#[prism::remote]`: turns a plain or `async` function into a remote
//! function. For `fn square(x: u64) -> u64` it generates a unit type
//! `square` with
//!
//! - `square::remote(x)` → `prism::Result<prism::ObjectRef<u64>>`, where `x`
//!   is a `u64` or an `ObjectRef<u64>` (resolved before the task runs);
//! - `square::options().num_cpus(2.0).max_retries(0).remote(x)`;
//! - `square::local(x)`, the original body, called in this process;
//! - a registration under the stable name `module::path::square`, which a
//!   worker (the same binary in worker mode) looks up to run the call.
//!
//! Every parameter and the result must be rkyv-archivable (`prism::Value`);
//! anything else is a compile error naming the type.

mod actor;

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{parse_macro_input, FnArg, ItemFn, Pat, ReturnType};

/// Makes a function remote. See the crate docs.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let msg = "#[prism::remote] takes no arguments; set options per call with `f::options()`";
        return syn::Error::new(proc_macro2::Span::call_site(), msg)
            .to_compile_error()
            .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    match expand(func) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Makes a type an actor: put it on the struct and on its `impl` block.
/// The impl needs `fn new(..) -> Self`; every `&self` / `&mut self` method
/// (plain or `async`) becomes callable through `ActorHandle<Type>`.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let msg = "#[prism::actor] takes no arguments; set options with `Type::options()`";
        return syn::Error::new(proc_macro2::Span::call_site(), msg)
            .to_compile_error()
            .into();
    }
    let parsed = match syn::parse::<syn::Item>(item) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error().into(),
    };
    let out = match parsed {
        syn::Item::Struct(s) => actor::on_struct(s),
        syn::Item::Impl(i) => actor::on_impl(i),
        other => Err(syn::Error::new_spanned(
            other,
            "#[prism::actor] goes on a struct and on its impl block",
        )),
    };
    match out {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(func: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let vis = &func.vis;
    let name = &func.sig.ident;
    let name_str = name.to_string();
    let is_async = func.sig.asyncness.is_some();
    if !func.sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &func.sig.generics,
            "a remote function cannot be generic: workers look it up by name",
        ));
    }
    let mut arg_names = Vec::new();
    let mut arg_types = Vec::new();
    for (i, input) in func.sig.inputs.iter().enumerate() {
        let FnArg::Typed(pt) = input else {
            return Err(syn::Error::new_spanned(
                input,
                "a remote function cannot take self",
            ));
        };
        if let syn::Type::Reference(r) = &*pt.ty {
            return Err(syn::Error::new_spanned(
                r,
                "remote function arguments are moved to another process: take them by value",
            ));
        }
        let ident = match &*pt.pat {
            Pat::Ident(pi) => pi.ident.clone(),
            _ => format_ident!("__arg{}", i),
        };
        arg_names.push(ident);
        arg_types.push((*pt.ty).clone());
    }
    let ret: syn::Type = match &func.sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let attrs = &func.attrs;
    let body = &func.block;
    let asyncness = &func.sig.asyncness;
    let inputs = &func.sig.inputs;
    let call_ty = format_ident!("__PrismCall_{}", name);
    let invoke_fn = format_ident!("__prism_invoke_{}", name);
    let indices: Vec<usize> = (0..arg_types.len()).collect();
    let n_args = arg_types.len();
    let run = if is_async {
        quote!(::prism::__private::block_on(#name::local(#(#arg_names),*)))
    } else {
        quote!(#name::local(#(#arg_names),*))
    };
    let doc = format!("Remote function `{name_str}`: call `{name_str}::remote(..)`.");
    Ok(quote! {
        // First, so a type that cannot cross processes is the first error.
        const _: () = {
            #(::prism::__private::assert_value::<#arg_types>();)*
            ::prism::__private::assert_value::<#ret>();
        };

        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy)]
        #vis struct #name;

        #[allow(non_camel_case_types)]
        #[doc(hidden)]
        #vis struct #call_ty(::prism::TaskOptions);

        impl #name {
            /// The stable name workers look this function up by.
            pub const NAME: &'static str = concat!(module_path!(), "::", #name_str);

            /// Runs the body here, in this process.
            #(#attrs)*
            pub #asyncness fn local(#inputs) -> #ret #body

            /// Submits a call; returns a reference to its future result.
            #[allow(clippy::too_many_arguments)]
            pub fn remote(#(#arg_names: impl ::prism::IntoArg<#arg_types>),*) -> ::prism::Result<::prism::ObjectRef<#ret>> {
                Self::options().remote(#(#arg_names),*)
            }

            /// Per-call options (resources, retries, strategy, name).
            pub fn options() -> #call_ty {
                #call_ty(::prism::TaskOptions::new(Self::NAME))
            }
        }

        impl #call_ty {
            ::prism::__task_option_methods!();

            /// Submits a call with these options.
            #[allow(clippy::too_many_arguments)]
            pub fn remote(self, #(#arg_names: impl ::prism::IntoArg<#arg_types>),*) -> ::prism::Result<::prism::ObjectRef<#ret>> {
                let args = ::std::vec![#(::prism::__private::encode_arg(::prism::IntoArg::into_arg(#arg_names))?),*];
                ::prism::__private::submit::<#ret>(&self.0, args)
            }
        }

        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #invoke_fn(args: &[&[u8]]) -> ::std::result::Result<::prism::__private::Encoded, ::std::string::String> {
            if args.len() != #n_args {
                return Err(format!("{} takes {} arguments, got {}", #name::NAME, #n_args, args.len()));
            }
            #(let #arg_names: #arg_types = ::prism::__private::decode_arg(args[#indices], #indices)?;)*
            let out: #ret = #run;
            ::prism::__private::encode_result(&out)
        }

        ::prism::__private::inventory::submit! {
            ::prism::__private::Registration { name: #name::NAME, invoke: #invoke_fn }
        }
    })
}
