from gondola.cli import main

raise SystemExit(main())
