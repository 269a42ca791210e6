#!/usr/bin/env node
// docs/API.md, generated from the doc comments of what src/index.ts exports.
//
//   node scripts/api-doc.mjs                 writes docs/API.md
//   node scripts/api-doc.mjs --out FILE      writes FILE instead
//   node scripts/api-doc.mjs --json          also prints every item (name, kind, doc) as JSON on stdout
//
// The TypeScript compiler reads src/index.ts with the repository's tsconfig and
// walks its export statements in source order, following re-exports (`export { x } from`,
// `export *`) to the declarations. Each item gets its signature as the checker prints it,
// its doc comment, and, for classes and interfaces, their own public members with theirs. A doc comment on an
// export statement of index.ts (a note for everything that statement exports) is printed
// once, at the top of its section. Nothing here depends on the checkout's path or the
// clock, so the output is byte-for-byte the same wherever it runs (test/repo/api-doc.test.ts).
import ts from 'typescript';
import { writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const INDEX = join(root, 'src/index.ts');
const FLAGS = ts.TypeFormatFlags.NoTruncation | ts.TypeFormatFlags.UseAliasDefinedOutsideCurrentScope;

function program() {
  const cfg = ts.readConfigFile(join(root, 'tsconfig.json'), ts.sys.readFile);
  if (cfg.error) throw new Error(ts.flattenDiagnosticMessageText(cfg.error.messageText, '\n'));
  const parsed = ts.parseJsonConfigFileContent(cfg.config, ts.sys, root);
  return ts.createProgram({ rootNames: [INDEX], options: { ...parsed.options, noEmit: true } });
}

/** Repository-relative path of a source file, with '/' separators. */
function rel(file) {
  return relative(root, file).split('\\').join('/');
}

/** Printed types never carry the checkout's absolute path (an import("...") of an unexported type). */
function clean(s) {
  return s.split(root + '/').join('');
}

/** The /** ... *\/ comment directly before a statement, as text, or ''. */
function statementDoc(sf, node) {
  const ranges = ts.getLeadingCommentRanges(sf.text, node.pos) ?? [];
  const last = ranges.at(-1);
  if (!last || last.kind !== ts.SyntaxKind.MultiLineCommentTrivia) return '';
  const text = sf.text.slice(last.pos, last.end);
  if (!text.startsWith('/**')) return '';
  return text
    .replace(/^\/\*\*\s*/, '')
    .replace(/\s*\*\/$/, '')
    .split('\n')
    .map((l) => l.replace(/^\s*\* ?/, ''))
    .join('\n')
    .trim();
}

/** A symbol's doc comment and its JSDoc tags, as text. */
function docOf(checker, sym) {
  const parts = [ts.displayPartsToString(sym.getDocumentationComment(checker)).trim()];
  for (const tag of sym.getJsDocTags(checker)) parts.push(`@${tag.name}${tag.text ? ' ' + ts.displayPartsToString(tag.text) : ''}`);
  return parts.filter(Boolean).join('\n\n');
}

function kindOf(sym) {
  const f = sym.flags;
  if (f & ts.SymbolFlags.Class) return 'class';
  if (f & ts.SymbolFlags.Function) return 'function';
  if (f & ts.SymbolFlags.Interface) return 'interface';
  if (f & ts.SymbolFlags.TypeAlias) return 'type';
  if (f & ts.SymbolFlags.Enum) return 'enum';
  if (f & ts.SymbolFlags.Variable) return 'const';
  return 'other';
}

function isPublic(decl) {
  const mods = ts.canHaveModifiers(decl) ? (ts.getModifiers(decl) ?? []) : [];
  if (mods.some((m) => m.kind === ts.SyntaxKind.PrivateKeyword || m.kind === ts.SyntaxKind.ProtectedKeyword)) return false;
  return !(decl.name && ts.isPrivateIdentifier(decl.name));
}

function modifiers(decl) {
  const mods = ts.canHaveModifiers(decl) ? (ts.getModifiers(decl) ?? []) : [];
  return mods
    .filter((m) => m.kind === ts.SyntaxKind.StaticKeyword || m.kind === ts.SyntaxKind.ReadonlyKeyword)
    .map((m) => m.getText() + ' ')
    .join('');
}

function heritage(decl) {
  return (decl.heritageClauses ?? []).map((h) => ' ' + h.getText()).join('');
}

function typeParams(decl) {
  return decl.typeParameters ? `<${decl.typeParameters.map((t) => t.getText()).join(', ')}>` : '';
}

/** One member (property, method, constructor) of a class or interface: its signature lines and its doc. */
function memberOf(checker, owner, m) {
  const decl = m.valueDeclaration ?? m.declarations?.[0];
  if (!decl || !isPublic(decl)) return undefined;
  const name = m.getName();
  const type = checker.getTypeOfSymbolAtLocation(m, decl);
  const lines = [];
  if (ts.isMethodDeclaration(decl) || ts.isMethodSignature(decl)) {
    for (const sig of type.getCallSignatures()) lines.push(`${modifiers(decl)}${name}${clean(checker.signatureToString(sig, decl, FLAGS))}`);
  } else if (ts.isGetAccessorDeclaration(decl)) {
    lines.push(`${modifiers(decl)}get ${name}(): ${clean(checker.typeToString(type, decl, FLAGS))}`);
  } else {
    // A member's type as declared where it is annotated, as the checker's signatureToString reuses the
    // declared type nodes of parameters: `code: ErrorCode`, not the union it expands to, and an optional
    // member without the `| undefined` the checker adds. Inferred types are printed by the checker.
    const opt = m.flags & ts.SymbolFlags.Optional ? '?' : '';
    const declared = decl.type ? decl.type.getText().replace(/\s+/g, ' ') : clean(checker.typeToString(type, decl, FLAGS));
    lines.push(`${modifiers(decl)}${name}${opt}: ${declared}`);
  }
  return { name, signature: lines, doc: docOf(checker, m), pos: decl.pos, method: ts.isMethodDeclaration(decl) || ts.isMethodSignature(decl) };
}

/** Own members, in declaration order (inherited ones belong to the base's entry). */
function ownMembers(checker, sym, { statics }) {
  const table = statics ? sym.exports : sym.members;
  const out = [];
  table?.forEach((m, key) => {
    if (key === '__constructor' || key === 'prototype' || m.flags & ts.SymbolFlags.TypeParameter) return;
    const item = memberOf(checker, sym, m);
    if (item) out.push({ ...item, static: statics });
  });
  return out.sort((a, b) => a.pos - b.pos);
}

function describe(checker, exportedName, sym) {
  const decl = sym.valueDeclaration ?? sym.declarations?.[0];
  const kind = kindOf(sym);
  const item = { name: exportedName, kind, source: rel(decl.getSourceFile().fileName), doc: docOf(checker, sym), signature: [], members: [] };
  if (kind === 'function') {
    const type = checker.getTypeOfSymbolAtLocation(sym, decl);
    for (const sig of type.getCallSignatures()) item.signature.push(`function ${exportedName}${clean(checker.signatureToString(sig, decl, FLAGS))}`);
  } else if (kind === 'class') {
    item.signature.push(`class ${exportedName}${typeParams(decl)}${heritage(decl)}`);
    const ctorType = checker.getTypeOfSymbolAtLocation(sym, decl);
    const ctorDecls = decl.members.filter((m) => ts.isConstructorDeclaration(m));
    if (!ctorDecls.some((c) => !isPublic(c))) {
      for (const sig of ctorType.getConstructSignatures()) {
        const s = clean(checker.signatureToString(sig, decl, FLAGS));
        item.signature.push(`new ${exportedName}${s.slice(0, s.lastIndexOf('):') + 1)}`);
      }
    }
    // Parameter properties (constructor(readonly rt: Rtnl)) are members too, and come first.
    item.members = [...ownMembers(checker, sym, { statics: true }), ...ownMembers(checker, sym, { statics: false })];
  } else if (kind === 'interface') {
    item.signature.push(`interface ${exportedName}${typeParams(decl)}${heritage(decl)}`);
    item.members = ownMembers(checker, sym, { statics: false });
  } else if (kind === 'type') {
    const t = checker.getDeclaredTypeOfSymbol(sym);
    item.signature.push(`type ${exportedName}${typeParams(decl)} = ${clean(checker.typeToString(t, decl, FLAGS | ts.TypeFormatFlags.InTypeAlias))}`);
  } else {
    const t = checker.getTypeOfSymbolAtLocation(sym, decl);
    item.signature.push(`const ${exportedName}: ${clean(checker.typeToString(t, decl, FLAGS))}`);
  }
  return item;
}

function resolveAlias(checker, sym) {
  return sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym;
}

/** Sections in index.ts's source order: one per re-export statement, one per run of local declarations. */
export function collectApi() {
  const prog = program();
  const checker = prog.getTypeChecker();
  const sf = prog.getSourceFile(INDEX);
  const moduleDoc = statementDoc(sf, sf.statements[0]);
  const seen = new Set();
  const sections = [];
  let local;
  const add = (section, name, sym) => {
    if (seen.has(name)) return;
    seen.add(name);
    section.items.push(describe(checker, name, resolveAlias(checker, sym)));
  };
  for (const st of sf.statements) {
    if (ts.isExportDeclaration(st) && st.moduleSpecifier) {
      local = undefined;
      const from = st.moduleSpecifier.text;
      const section = { title: `from '${from}'`, note: statementDoc(sf, st), items: [] };
      sections.push(section);
      if (st.exportClause && ts.isNamedExports(st.exportClause)) {
        for (const spec of st.exportClause.elements) add(section, spec.name.text, checker.getSymbolAtLocation(spec.name));
      } else if (!st.exportClause) {
        // export *: everything the module exports, in its declarations' order.
        section.title = `every export of '${from}'`;
        const mod = checker.getSymbolAtLocation(st.moduleSpecifier);
        const exps = checker.getExportsOfModule(mod).map((s) => {
          const target = resolveAlias(checker, s);
          const d = target.valueDeclaration ?? target.declarations[0];
          return { s, file: rel(d.getSourceFile().fileName), pos: d.pos };
        });
        exps.sort((a, b) => (a.file === b.file ? a.pos - b.pos : a.file < b.file ? -1 : 1));
        for (const e of exps) add(section, e.s.getName(), e.s);
      }
      continue;
    }
    const exported = ts.canHaveModifiers(st) && (ts.getModifiers(st) ?? []).some((m) => m.kind === ts.SyntaxKind.ExportKeyword);
    if (!exported) continue;
    if (!local) {
      local = { title: "declared in 'src/index.ts'", note: '', items: [] };
      sections.push(local);
    }
    const names = ts.isVariableStatement(st) ? st.declarationList.declarations.map((d) => d.name) : [st.name];
    for (const n of names) add(local, n.text, checker.getSymbolAtLocation(n));
  }
  return { moduleDoc, sections: sections.filter((s) => s.items.length) };
}

function fence(lines) {
  return ['```ts', ...lines, '```'].join('\n');
}

function anchorName(item) {
  return `${item.kind} \`${item.name}\``;
}

export function renderMarkdown(api) {
  const out = [];
  out.push('# synhold API');
  out.push('');
  out.push(
    '<!-- Generated by `node scripts/api-doc.mjs` from the doc comments of what src/index.ts exports; do not edit by hand. test/repo/api-doc.test.ts fails when this file is not current. -->',
  );
  out.push('');
  if (api.moduleDoc) out.push(api.moduleDoc, '');
  out.push('## Contents', '');
  for (const s of api.sections) out.push(`- ${s.title}: ${s.items.map((i) => `\`${i.name}\``).join(', ')}`);
  out.push('');
  for (const s of api.sections) {
    out.push(`## ${s.title}`, '');
    if (s.note) out.push(s.note, '');
    for (const item of s.items) {
      out.push(`### ${anchorName(item)}`, '');
      out.push(fence(item.signature), '');
      out.push(item.doc || '_(no doc comment)_', '');
      if (item.members.length) {
        const methods = item.members.filter((m) => m.method);
        const props = item.members.filter((m) => !m.method);
        if (props.length) {
          out.push(item.kind === 'class' ? 'Public properties:' : 'Members:', '');
          for (const m of props) out.push(`- \`${m.signature.join('; ')}\`${m.doc ? ': ' + m.doc.replace(/\n+/g, ' ') : ''}`);
          out.push('');
        }
        for (const m of methods) {
          out.push(`#### \`${item.name}.${m.name}()\`${m.static ? ' (static)' : ''}`, '');
          out.push(fence(m.signature), '');
          if (m.doc) out.push(m.doc, '');
        }
      }
    }
  }
  return out.join('\n').replace(/\n+$/, '\n');
}

const isMain = process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const args = process.argv.slice(2);
  const outIdx = args.indexOf('--out');
  const out = outIdx >= 0 ? resolve(args[outIdx + 1]) : join(root, 'docs/API.md');
  const api = collectApi();
  writeFileSync(out, renderMarkdown(api));
  if (args.includes('--json')) {
    const items = api.sections.flatMap((s) => s.items.map((i) => ({ name: i.name, kind: i.kind, source: i.source, doc: i.doc, note: s.note })));
    process.stdout.write(JSON.stringify(items) + '\n');
  }
}
