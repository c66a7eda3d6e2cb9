from tollway.cli.entry import main

main()
