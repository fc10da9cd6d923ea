%% The reliability results table: each measured row is printed, and, when
%% MN_RELIABILITY_RESULTS names a file (`make reliability' sets it), added
%% to it as a Markdown table row, so the command ends with one table.
-module(mn_test_results).
-export([row/2]).

%% Part: what was tested ("kill -9 under load"); Cells: {Heading, Value}.
-spec row(string(), [{string(), term()}]) -> ok.
row(Part, Cells) ->
    Line = lists:flatten(["| ", Part, " | ",
                          lists:join(" | ", [[H, ": ", cell(V)] || {H, V} <- Cells]), " |\n"]),
    ct:pal("~s", [Line]),
    case os:getenv("MN_RELIABILITY_RESULTS") of
        false -> ok;
        "" -> ok;
        File -> ok = file:write_file(File, Line, [append])
    end.

cell(V) when is_list(V) -> V;
cell(V) when is_binary(V) -> binary_to_list(V);
cell(V) -> io_lib:format("~p", [V]).
