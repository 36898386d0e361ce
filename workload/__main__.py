from workload.main import main

raise SystemExit(main())
