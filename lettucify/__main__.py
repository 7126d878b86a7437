from lettucify.cli import main

main()
