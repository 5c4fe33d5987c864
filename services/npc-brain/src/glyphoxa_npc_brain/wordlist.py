"""Ordinary English words that never count as a misheard NPC name (only an exact name does).

Fuzzy name matching would otherwise hear "Greta" in "great" or "Voss" in "vows". A
three-letter word can only come close to a four-letter name, so mostly longer words are
listed: frequent English words plus words common at a fantasy role-playing table.
"""

from __future__ import annotations

_WORDS = """
able about above accept across act actually after again against agree ahead alive allow almost
alone along already also although always among amount anger angry animal another answer anyone
anything anyway anywhere apart appear apple area arms army around arrive arrow arrows attack
avoid away baby back badly bag bake ball bank bard barely barrel base basic bass batch battle
beach bear beard beast beat beautiful became because become been beer before began begin behind
being believe bell belong below belt bench beside best better between beyond bird birth bite
bits black blade blame blank blast bleed bless blind block blood blow blue board boat body bold
bone book boot boots border boss both bottle bottom bought bound bowl brave bread break breath
brew brick bridge bright bring broke broken brother brought brown build built bunch burn burst
business busy butter buyer cabin cake call called calm came camp candle cannot cape captain card
care careful carry case cast castle catch cause cave cell center certain chain chair chance
change charge cheap check cheese chest chief child choice choose church city claim class clean
clear climb close cloth clothes cloud coat coin coins cold collect color come comes coming
common cook cool copper corner cost could count country couple course court cover craft crazy
create creature crew cross crowd crown cruel crystal cure curse cut dagger damage dance danger
dark daughter dawn dead deal dear death debt decide deep defend demon deny desk devil didn
died diet different dinner direct dirt dirty dock does doing done door double doubt down dozen
dragon draw dream dress drink drive drop drunk during dust duty each early earn earth east easy
either else empty enemy enough enter even evening event ever every everyone evil exact except
expect extra eyes face fact fail fair faith fall false fame family famous farm fast father
fault fear feast feel feet fell fellow felt fence fetch fever field fight figure fill final
find fine finger finish fire first fish five flame flesh flight floor flower folk follow food
fool foot force forest forge forget forgot form forth fortune forward fought found four free
fresh friend from front frost fruit full funny gain game garden gate gather gave gear gems
gentle get ghost giant gift girl give given glad glass glove goat goes gods gold golden gone
good goods grab grace grain grand grass grave gray great greed greedy green greet greeting
grew grey ground group grow guard guess guest guide guild guilt guilty hair half hall hammer
hand hands hang happen happy hard harm hate have head heal health hear heard heart heat heavy
held hell hello help herb herbs here hero hidden hide high hill hire hold hole holy home honest
honor hood hooded hope horn horse host hour house however huge human hundred hunt hunter hurry
hurt idea inside instead iron island itself jail jewel join joke journey judge jump just keep
kept key kill kind king kiss knew knife knight knock know known lady laid lake land large last
late later laugh lead leader learn least leather leave left legs lend less letter level liar
life lift light like limp line lion list listen little live living load local lock long look
lord lose loss lost lots loud love lower luck lucky made magic main make many mark market marry
master match matter maybe meal mean meant meat meet member memory men mention merchant mercy
message metal middle might mile mind mine minute mirror miss mistake moment money monster month
moon more morning moss most mother mountain mouth move much music must myself name nasty near
nearly neck need needs never news next nice night noble none north nose note nothing notice
number offer office often older once only open order other others over owner pack page paid
pain pair paper part party pass past path pay peace people perhaps person pick piece pile place
plan plant play please plenty pocket point poison poor potion pound powder power pray prefer
present press pretty price pride priest prince prison problem promise proof proper proud prove
pull pure push quest question quick quiet quite race rain raise rather reach read ready real
really reason rebel recall record red rest return reward rich ride right ring rise risk river
road rock roll roof room rope rose rough round royal ruin rule rumor rune safe said sail sale
salt same save says scare scared scroll seal search season seat second secret seem seen sell
send sense sent serve service seven shadow shall shame shape share sharp shelf shield shine ship
shop short should shout show shut sick side sign silent silver simple since sing sister sixty
size skill skin sleep slow small smell smile smoke snake snow soft sold soldier some someone
something sometimes song soon sorry sort soul sound south speak special spell spend spent spirit
spot staff stag stand star start stay steal steel step stew stick still stock stone stood stop
store storm story strange stranger straw street strike strong stuck such sugar summer sure sweet
sword table tail take tale talk tall taste tavern teach tell temple tender than thank thanks
that their them then there these they thick thief thin thing think third this those though
thought three throw ticket tide till time tiny tired today together told tomb tomorrow tonight
took tooth torch touch toward tower town track trade trail train trap travel treasure treat tree
trick tried trip trouble true trust truth turn twelve twenty twice under until upon used useful
usual valley very village visit voice vows wagon wait wake walk wall want war warm warn wash
watch water weak wealth weapon wear weather week weight well went were west what wheel when
where which while white whole whose wide wife wild will wind window wine wing winter wise wish
witch with within without woke wolf woman wood wooden word work world worry worse worth would
wound write wrong yard year years yellow young your yours yourself youth
"""

COMMON_WORDS: frozenset[str] = frozenset(_WORDS.split())
