from leukemia_mtl.cli import main

raise SystemExit(main())
