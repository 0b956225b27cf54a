# All settings live in settings.ini (nbdev 2); edit them there, not here.
from configparser import ConfigParser
from pathlib import Path
import shlex, shutil
import setuptools
from setuptools.command.build_py import build_py

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, f"missing expected setting: {o}"
setup_cfg = {o: cfg[o] for o in cfg_keys}

licenses = {
    'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License'),
    'mit': ('MIT License', 'OSI Approved :: MIT License'),
}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()

requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
learn_requirements = shlex.split(cfg.get('learn_requirements', ''))  # what the lessons and exercises need: JupyterLab, its kernel
min_python = cfg['min_python']
lic = licenses.get(cfg['license'].lower(), (cfg['license'], None))
package_data = {cfg['lib_name']: cfg.get('package_data', '').split()}


class build_py_with_notebooks(build_py):
    """Ship the lessons (`nbs/course/`) as `bts_course/notebooks/course/`, and the library notebooks that hold the
    exercises' solutions as `bts_course/notebooks/`, so that `bts exercises` works from a wheel with no checkout
    around. An editable install reads `nbs/` of the checkout instead."""
    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False): return
        nbs = Path(cfg.get('nbs_path', 'nbs'))
        dest = Path(self.build_lib) / cfg['lib_name'] / 'notebooks'
        (dest / 'course').mkdir(parents=True, exist_ok=True)
        for nb in sorted(nbs.glob('*.ipynb')):
            if '# EXERCISE:' in nb.read_text(encoding='utf-8'): shutil.copy2(nb, dest / nb.name)
        for nb in sorted((nbs / 'course').glob('*.ipynb')): shutil.copy2(nb, dest / 'course' / nb.name)


setuptools.setup(
    name=cfg['lib_name'],
    license=lic[0],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()]
                + ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]]
                + (['License :: ' + lic[1]] if lic[1] else []),
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']),
    include_package_data=True,
    package_data=package_data,
    install_requires=requirements,
    extras_require={'dev': dev_requirements, 'learn': learn_requirements},
    python_requires='>=' + min_python,
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    cmdclass={'build_py': build_py_with_notebooks},
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d'],
    },
    **setup_cfg)
