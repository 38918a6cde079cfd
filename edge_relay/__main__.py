from edge_relay.cli import main

raise SystemExit(main())
