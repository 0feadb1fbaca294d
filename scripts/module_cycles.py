#!/usr/bin/env python3
"""Lists import cycles between the modules of each crate given (issue #16: "no import cycle between
modules of a crate"). Approximate: it reads `crate::…` paths outside comments and test modules,
maps each to the longest module (file) it names, and prints the strongly connected components of
that graph. Usage: python3 scripts/module_cycles.py crates/*
"""
import os,re,sys
def modpath(root,f):
    rel=os.path.relpath(f,root)[:-3].split(os.sep)
    if rel[-1] in ('mod','lib','main'): rel=rel[:-1]
    return tuple(rel)
for crate in sys.argv[1:]:
    root=os.path.join(crate,'src')
    files=[os.path.join(d,f) for d,_,fs in os.walk(root) for f in fs if f.endswith('.rs')]
    mods={modpath(root,f):f for f in files}
    g={m:set() for m in mods}
    for m,f in mods.items():
        src='\n'.join(l for l in open(f).read().split('\n') if not l.strip().startswith('//'))
        src=re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*','',src,flags=re.S)
        refs=set()
        for mm in re.finditer(r'crate::((?:\w+::)*\w+)',src): refs.add(tuple(mm.group(1).split('::')))
        for mm in re.finditer(r'use crate::\{([^;]*)\};',src,flags=re.S):
            for part in re.split(r',\s*(?![^{]*\})',mm.group(1)):
                part=part.strip()
                head=re.match(r'(\w+(?:::\w+)*)',part)
                if head: refs.add(tuple(head.group(1).split('::')))
                inner=re.search(r'(\w+(?:::\w+)*)::\{([^}]*)\}',part)
                if inner:
                    for x in inner.group(2).split(','):
                        x=x.strip().split(' ')[0]
                        if x and x!='self': refs.add(tuple(inner.group(1).split('::'))+tuple(x.split('::')))
        for r in refs:
            best=None
            for k in range(len(r),0,-1):
                if r[:k] in mods: best=r[:k];break
            if best and best!=m and best!=() and not (m[:len(best)]==best): g[m].add(best)
    # find cycles (SCCs)
    idx={};low={};st=[];on=set();out=[];c=[0]
    sys.setrecursionlimit(10000)
    def sc(v):
        idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
        for w in g[v]:
            if w not in idx: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v:break
            if len(comp)>1: out.append(comp)
    for v in g:
        if v not in idx: sc(v)
    print(crate, 'cycles:', ['<->'.join('::'.join(x) for x in comp) for comp in out] or 'none')
