//! A deterministic bound on recursion.
//!
//! Without it, how deep a contract may recurse would be set by wasmtime's
//! native stack limit, and so by the machine code Cranelift emits: the same
//! call could trap on one architecture and succeed on another, and validators
//! would disagree. So every module is rewritten before it is compiled: each
//! function `f` gets a thunk that adds `f`'s frame cost to a counter, traps
//! when the counter would pass [`FRAME_BUDGET`], calls `f`, and takes the cost
//! off again; every reference to `f` (calls, exports, tables, `ref.func`, the
//! start function) goes to the thunk. A frame's cost is `2 + 2 × params +
//! locals + the deepest operand stack` of `f` (its own frame and its thunk's),
//! a bound on the native stack the frame needs, so the counter always runs
//! out before the native stack does (see [`NATIVE_BYTES_PER_UNIT`]).
//!
//! The counter is an exported global ([`COUNTER_EXPORT`]); after a trap the
//! host reads it to tell this limit from any other `unreachable`. The stored
//! code, and so the code hash, is the module as deployed: the rewrite happens
//! on every node, identically, when the module is compiled.

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{
    CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection, GlobalSection,
    GlobalType, Instruction, Module, SectionId, ValType,
};
use wasmparser::{FuncType, Parser, Payload, Validator, WasmFeatures};

/// Frame cost units all active calls of one contract call may use together.
pub const FRAME_BUDGET: u32 = 6_000;

/// Native stack one unit of frame cost may take, with the fixed part of a
/// frame (return address, saved registers) counted as units too; Cranelift
/// keeps a wasm value in at most 8 bytes, so this is a margin of two.
pub const NATIVE_BYTES_PER_UNIT: usize = 80;

const _: () = assert!(
    FRAME_BUDGET as usize * NATIVE_BYTES_PER_UNIT <= super::MAX_WASM_STACK,
    "the frame budget must run out before the native stack does"
);

/// The exported global holding the frame cost in use.
pub const COUNTER_EXPORT: &str = "__trellis_frames";

/// Rewrites `code` as described in the module docs. Fails on a module that
/// does not validate, or that already exports [`COUNTER_EXPORT`].
pub fn instrument(code: &[u8]) -> Result<Vec<u8>, String> {
    let shape = Shape::read(code)?;
    let mut rewriter = Rewriter {
        shape,
        global_done: false,
        export_done: false,
    };
    let mut module = Module::new();
    rewriter
        .parse_core_module(&mut module, Parser::new(0), code)
        .map_err(|e| format!("cannot rewrite the module: {e}"))?;
    Ok(module.finish())
}

/// What the rewrite needs to know of a module.
struct Shape {
    imported_functions: u32,
    globals: u32,
    /// Type index of each function the module defines.
    types: Vec<u32>,
    /// Parameter count of each type.
    params: Vec<u32>,
    /// Frame cost of each defined function (see the module docs).
    costs: Vec<u32>,
}

impl Shape {
    /// Validates `code` and measures every function's frame.
    fn read(code: &[u8]) -> Result<Shape, String> {
        let invalid = |e: wasmparser::BinaryReaderError| format!("not a valid module: {e}");
        let mut validator = Validator::new_with_features(WasmFeatures::default());
        let mut shape = Shape {
            imported_functions: 0,
            globals: 0,
            types: Vec::new(),
            params: Vec::new(),
            costs: Vec::new(),
        };
        for payload in Parser::new(0).parse_all(code) {
            let payload = payload.map_err(invalid)?;
            match &payload {
                Payload::TypeSection(section) => {
                    for ty in section.clone().into_iter_err_on_gc_types() {
                        let ty: FuncType = ty.map_err(invalid)?;
                        shape.params.push(ty.params().len() as u32);
                    }
                }
                Payload::ImportSection(section) => {
                    for import in section.clone().into_imports() {
                        match import.map_err(invalid)?.ty {
                            wasmparser::TypeRef::Func(_) => shape.imported_functions += 1,
                            wasmparser::TypeRef::Global(_) => shape.globals += 1,
                            _ => {}
                        }
                    }
                }
                Payload::FunctionSection(section) => {
                    for ty in section.clone() {
                        shape.types.push(ty.map_err(invalid)?);
                    }
                }
                Payload::GlobalSection(section) => shape.globals += section.count(),
                Payload::ExportSection(section) => {
                    for export in section.clone() {
                        if export.map_err(invalid)?.name == COUNTER_EXPORT {
                            return Err(format!(
                                "exports `{COUNTER_EXPORT}`, a name Trellis reserves"
                            ));
                        }
                    }
                }
                Payload::CodeSectionEntry(body) => {
                    let mut func = validator
                        .code_section_entry(body)
                        .map_err(invalid)?
                        .into_validator(Default::default());
                    func.read_locals(&mut body.get_binary_reader())
                        .map_err(invalid)?;
                    let mut reader = body.get_operators_reader().map_err(invalid)?;
                    let mut deepest = 0u32;
                    while !reader.eof() {
                        let offset = reader.original_position();
                        let op = reader.read().map_err(invalid)?;
                        func.op(offset, &op).map_err(invalid)?;
                        deepest = deepest.max(func.operand_stack_height());
                    }
                    reader.finish().map_err(invalid)?;
                    let params = shape
                        .types
                        .get(shape.costs.len())
                        .and_then(|&ty| shape.params.get(ty as usize))
                        .copied()
                        .unwrap_or(0);
                    // Locals include the parameters: add them once more for the thunk.
                    let cost = 2u32
                        .saturating_add(params)
                        .saturating_add(func.len_locals())
                        .saturating_add(deepest);
                    shape.costs.push(cost);
                    continue;
                }
                _ => {}
            }
            validator.payload(&payload).map_err(invalid)?;
        }
        Ok(shape)
    }

    fn defined(&self) -> u32 {
        self.types.len() as u32
    }
}

struct Rewriter {
    shape: Shape,
    global_done: bool,
    export_done: bool,
}

impl Rewriter {
    fn counter(&self) -> u32 {
        self.shape.globals
    }

    fn add_counter(&mut self, globals: &mut GlobalSection) {
        globals.global(
            GlobalType {
                val_type: ValType::I32,
                mutable: true,
                shared: false,
            },
            &ConstExpr::i32_const(0),
        );
        self.global_done = true;
    }

    fn add_export(&mut self, exports: &mut ExportSection) {
        exports.export(COUNTER_EXPORT, ExportKind::Global, self.counter());
        self.export_done = true;
    }

    /// The thunk of defined function `k`: count, check, call, uncount.
    fn thunk(&self, k: usize) -> Function {
        let counter = self.counter();
        // Any cost above the budget traps on the first call; capping it keeps the sum from wrapping.
        let cost = self.shape.costs[k].min(FRAME_BUDGET + 1) as i32;
        let params = self.shape.params[self.shape.types[k] as usize];
        let mut f = Function::new([]);
        f.instruction(&Instruction::GlobalGet(counter))
            .instruction(&Instruction::I32Const(cost))
            .instruction(&Instruction::I32Add)
            .instruction(&Instruction::GlobalSet(counter))
            .instruction(&Instruction::GlobalGet(counter))
            .instruction(&Instruction::I32Const(FRAME_BUDGET as i32))
            .instruction(&Instruction::I32GtU)
            .instruction(&Instruction::If(wasm_encoder::BlockType::Empty))
            .instruction(&Instruction::Unreachable)
            .instruction(&Instruction::End);
        for param in 0..params {
            f.instruction(&Instruction::LocalGet(param));
        }
        f.instruction(&Instruction::Call(self.shape.imported_functions + k as u32))
            .instruction(&Instruction::GlobalGet(counter))
            .instruction(&Instruction::I32Const(cost))
            .instruction(&Instruction::I32Sub)
            .instruction(&Instruction::GlobalSet(counter))
            .instruction(&Instruction::End);
        f
    }
}

/// Where a section sits in a module's section order.
fn rank(id: SectionId) -> u8 {
    match id {
        SectionId::Type => 1,
        SectionId::Import => 2,
        SectionId::Function => 3,
        SectionId::Table => 4,
        SectionId::Memory => 5,
        SectionId::Tag => 6,
        SectionId::Global => 7,
        SectionId::Export => 8,
        SectionId::Start => 9,
        SectionId::Element => 10,
        SectionId::DataCount => 11,
        SectionId::Code => 12,
        SectionId::Data => 13,
        _ => 0,
    }
}

impl Reencode for Rewriter {
    type Error = std::convert::Infallible;

    fn function_index(&mut self, func: u32) -> Result<u32, reencode::Error<Self::Error>> {
        Ok(if func >= self.shape.imported_functions {
            func + self.shape.defined()
        } else {
            func
        })
    }

    fn parse_function_section(
        &mut self,
        functions: &mut FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_function_section(self, functions, section)?;
        for &ty in &self.shape.types {
            functions.function(ty);
        }
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_code_section(self, code, section)?;
        for k in 0..self.shape.types.len() {
            code.function(&self.thunk(k));
        }
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_global_section(self, globals, section)?;
        self.add_counter(globals);
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_export_section(self, exports, section)?;
        self.add_export(exports);
        Ok(())
    }

    /// Names and other custom sections would describe the module before the
    /// rewrite; execution never reads them.
    fn parse_custom_section(
        &mut self,
        _module: &mut Module,
        _section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        Ok(())
    }

    /// Adds the global and export sections where a module has none.
    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        let after = after.map_or(0, rank);
        let before = before.map_or(u8::MAX, rank);
        let due = |section: SectionId| after < rank(section) && rank(section) < before;
        if !self.global_done && due(SectionId::Global) {
            let mut globals = GlobalSection::new();
            self.add_counter(&mut globals);
            module.section(&globals);
        }
        if !self.export_done && due(SectionId::Export) {
            let mut exports = ExportSection::new();
            self.add_export(&mut exports);
            module.section(&exports);
        }
        Ok(())
    }
}
