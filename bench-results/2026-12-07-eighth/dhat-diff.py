import json, sys, re, collections
SKIP = re.compile(r'^(malloc|realloc|calloc|memalign|posix_memalign|aligned_malloc|UnknownInlinedFun|with_capacity|reserve|grow|finish_grow|do_reserve|alloc|alloc_impl|allocate|__rust|try_reserve|push|extend|from|to_owned|to_vec|clone|new|insert|spec_|<|_ZN|reserve_inner|into_boxed|box_new|exchange_malloc|realloc_impl|grow_amortized|grow_one|write_str|fmt|to_string|default|collect|from_iter)')
def load(p, depth):
    d = json.load(open(p)); ft = d["ftbl"]; out = collections.Counter(); by = collections.Counter()
    for pp in d["pps"]:
        keep = []
        for i in pp["fs"]:
            f = re.sub(r'^0x[0-9A-F]+: ', '', ft[i])
            name = f.split(' (')[0]
            loc = f[len(name):].strip()
            if not keep and (SKIP.match(name) or 'library/' in loc or '/rustc/' in loc):
                continue
            keep.append(name + ' ' + loc.replace('(','').replace(')','').split('/')[-1])
            if len(keep) >= depth: break
        k = " <- ".join(keep)
        out[k] += pp["tbk"]; by[k] += pp["tb"]
    return out, by
depth = int(sys.argv[4]) if len(sys.argv) > 4 else 2
a, ab = load(sys.argv[1], depth); b, bb = load(sys.argv[2], depth); n = float(sys.argv[3])
diff = {k: (b[k]-a.get(k,0))/n for k in b}
print(f"total blocks per webhook {sum(diff.values()):.1f}")
for k, v in sorted(diff.items(), key=lambda kv: -kv[1])[:60]:
    if v < 0.2: break
    print(f"{v:6.2f} {(bb[k]-ab.get(k,0))/n:8.0f}B  {k[:300]}")
