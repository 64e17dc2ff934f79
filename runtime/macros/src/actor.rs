//! `#[prism::actor]` on a struct and on its `impl` block.

use quote::{format_ident, quote};
use syn::{FnArg, ImplItem, ItemImpl, ItemStruct, Pat, ReturnType, Type};

fn stub_ident(name: &syn::Ident) -> syn::Ident {
    format_ident!("__PrismStub_{}", name)
}

fn options_ident(name: &syn::Ident) -> syn::Ident {
    format_ident!("__PrismOptions_{}", name)
}

pub fn on_struct(s: ItemStruct) -> syn::Result<proc_macro2::TokenStream> {
    if !s.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &s.generics,
            "an actor type cannot be generic: workers look it up by name",
        ));
    }
    let name = &s.ident;
    let vis = &s.vis;
    let stub = stub_ident(name);
    let name_str = name.to_string();
    Ok(quote! {
        #s

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone)]
        #vis struct #stub {
            link: ::prism::ActorLink,
        }

        impl ::core::convert::From<::prism::ActorLink> for #stub {
            fn from(link: ::prism::ActorLink) -> Self {
                #stub { link }
            }
        }

        impl ::prism::ActorClass for #name {
            const CLASS: &'static str = concat!(module_path!(), "::", #name_str);
            type Stub = #stub;
        }
    })
}

struct Method {
    ident: syn::Ident,
    is_async: bool,
    shared: bool,
    arg_names: Vec<syn::Ident>,
    arg_types: Vec<Type>,
    ret: Type,
    has_self: bool,
}

fn method(f: &syn::ImplItemFn) -> syn::Result<Method> {
    let mut arg_names = Vec::new();
    let mut arg_types = Vec::new();
    let mut has_self = false;
    let mut shared = false;
    for (i, input) in f.sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                has_self = true;
                if r.reference.is_none() {
                    return Err(syn::Error::new_spanned(
                        r,
                        "actor methods take &self or &mut self",
                    ));
                }
                shared = r.mutability.is_none();
            }
            FnArg::Typed(pt) => {
                if let Type::Reference(r) = &*pt.ty {
                    return Err(syn::Error::new_spanned(
                        r,
                        "actor method arguments cross processes: take them by value",
                    ));
                }
                let ident = match &*pt.pat {
                    Pat::Ident(pi) => pi.ident.clone(),
                    _ => format_ident!("__arg{}", i),
                };
                arg_names.push(ident);
                arg_types.push((*pt.ty).clone());
            }
        }
    }
    let ret: Type = match &f.sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    Ok(Method {
        ident: f.sig.ident.clone(),
        is_async: f.sig.asyncness.is_some(),
        shared,
        arg_names,
        arg_types,
        ret,
        has_self,
    })
}

pub fn on_impl(imp: ItemImpl) -> syn::Result<proc_macro2::TokenStream> {
    if imp.trait_.is_some() || !imp.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &imp.self_ty,
            "#[prism::actor] goes on the type's own (non-generic) impl block",
        ));
    }
    let Type::Path(tp) = &*imp.self_ty else {
        return Err(syn::Error::new_spanned(
            &imp.self_ty,
            "expected a type name",
        ));
    };
    let name = tp
        .path
        .segments
        .last()
        .expect("a path has a segment")
        .ident
        .clone();
    let stub = stub_ident(&name);
    let opts = options_ident(&name);
    let mut ctor = None;
    let mut methods = Vec::new();
    for item in &imp.items {
        if let ImplItem::Fn(f) = item {
            let m = method(f)?;
            if m.has_self {
                methods.push(m);
            } else if m.ident == "new" {
                ctor = Some(m);
            }
        }
    }
    let Some(ctor) = ctor else {
        return Err(syn::Error::new_spanned(
            &imp.self_ty,
            "an actor needs a constructor `fn new(..) -> Self`",
        ));
    };
    let check = |names: &Vec<syn::Ident>, types: &Vec<Type>, what: String| {
        let n = names.len();
        let idx: Vec<usize> = (0..n).collect();
        quote! {
            if args.len() != #n {
                return Err(format!("{} takes {} arguments, got {}", #what, #n, args.len()));
            }
            #(let #names: #types = ::prism::__private::decode_arg(&args[#idx], #idx)?;)*
        }
    };
    // Constructor.
    let (cn, ct) = (&ctor.arg_names, &ctor.arg_types);
    let ctor_check = check(cn, ct, format!("{name}::new"));
    let ctor_call = if ctor.is_async {
        quote!(::prism::__private::block_on(#name::new(#(#cn),*)))
    } else {
        quote!(#name::new(#(#cn),*))
    };
    // Stubs, exclusive and shared dispatch.
    let mut stubs = Vec::new();
    let mut exclusive = Vec::new();
    let mut shared = Vec::new();
    let mut asserts = Vec::new();
    for m in &methods {
        let (ident, names, types, ret) = (&m.ident, &m.arg_names, &m.arg_types, &m.ret);
        let mstr = ident.to_string();
        asserts.push(quote!(#(::prism::__private::assert_value::<#types>();)* ::prism::__private::assert_value::<#ret>();));
        stubs.push(quote! {
            #[allow(clippy::too_many_arguments)]
            pub fn #ident(&self, #(#names: impl ::prism::IntoArg<#types>),*) -> ::prism::Result<::prism::ObjectRef<#ret>> {
                let args = ::std::vec![#(::prism::__private::encode_arg(::prism::IntoArg::into_arg(#names))?),*];
                self.link.call(#mstr, args)
            }
        });
        let checked = check(names, types, format!("{name}::{mstr}"));
        let run = if m.is_async {
            quote!(::prism::__private::block_on(self.#ident(#(#names),*)))
        } else {
            quote!(self.#ident(#(#names),*))
        };
        exclusive.push(quote! {
            #mstr => Some((|| -> ::std::result::Result<::prism::__private::Encoded, ::std::string::String> {
                #checked
                let out: #ret = #run;
                ::prism::__private::encode_result(&out)
            })()),
        });
        if m.is_async && m.shared {
            shared.push(quote! {
                #mstr => Some(::std::boxed::Box::pin(async move {
                    #checked
                    let guard = this.borrow();
                    let out: #ret = guard.#ident(#(#names),*).await;
                    drop(guard);
                    ::prism::__private::encode_result(&out)
                })),
            });
        }
    }
    let vis = quote!(pub);
    Ok(quote! {
        // First, so a type that cannot cross processes is the first error.
        const _: () = {
            #(::prism::__private::assert_value::<#ct>();)*
            #(#asserts)*
        };

        #imp

        #[allow(clippy::too_many_arguments)]
        impl #stub {
            #(#stubs)*
        }

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #opts(::prism::ActorOptions);

        impl #opts {
            ::prism::__actor_option_methods!();

            /// Creates the actor; calls made before its constructor returns wait for it.
            #[allow(clippy::too_many_arguments)]
            pub fn spawn(self, #(#cn: impl ::prism::IntoArg<#ct>),*) -> ::prism::Result<::prism::ActorHandle<#name>> {
                let args = ::std::vec![#(::prism::__private::encode_arg(::prism::IntoArg::into_arg(#cn))?),*];
                ::prism::api::actor::spawn::<#name>(&self.0, args)
            }
        }

        impl #name {
            /// Creation options (resources, name, restarts, concurrency).
            pub fn options() -> #opts {
                #opts(::prism::ActorOptions::new(<#name as ::prism::ActorClass>::CLASS))
            }
        }

        impl ::prism::__private::ActorImpl for #name {
            const CLASS: &'static str = <#name as ::prism::ActorClass>::CLASS;

            #[allow(unused_variables)]
            fn construct(args: &[&[u8]]) -> ::std::result::Result<Self, ::std::string::String> {
                #ctor_check
                Ok(#ctor_call)
            }

            #[allow(unused_variables, clippy::redundant_closure_call)]
            fn call(&mut self, method: &str, args: &[&[u8]]) -> ::std::option::Option<::std::result::Result<::prism::__private::Encoded, ::std::string::String>> {
                match method {
                    #(#exclusive)*
                    _ => None,
                }
            }

            // Shared borrows across awaits are the point: exclusive calls
            // wait until none is held (see prism's actor_worker).
            #[allow(unused_variables, clippy::await_holding_refcell_ref)]
            fn call_shared(
                this: ::std::rc::Rc<::std::cell::RefCell<Self>>,
                method: &str,
                args: ::std::vec::Vec<::std::vec::Vec<u8>>,
            ) -> ::std::option::Option<::prism::__private::LocalCall> {
                match method {
                    #(#shared)*
                    _ => None,
                }
            }
        }

        ::prism::__private::inventory::submit! {
            ::prism::__private::ActorRegistration {
                class: <#name as ::prism::ActorClass>::CLASS,
                run: ::prism::__private::run_actor::<#name>,
            }
        }
    })
}
