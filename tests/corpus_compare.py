import csv, sys, os
sys.path.insert(0, 'src')
from tidings.asyncapi import check_file, LoadOptions
base = '../shared/corpus/asyncapi'
rows = list(csv.DictReader(open(f'{base}/oracle.tsv'), delimiter='\t'))
bad = 0
for r in rows:
    res = check_file(os.path.join(base, r['file']), LoadOptions(root=base))
    mine = 0 if res.valid else 1
    if mine != int(r['cli_exit_code']):
        bad += 1
        print('DISAGREE', r['file'], 'oracle', r['cli_exit_code'], r['first_error_message'][:80])
        for d in res.diagnostics[:4]:
            print('    ', d.code, d.location, d.message[:150])
print('disagreements', bad, 'of', len(rows))
